"""`fota sim swarm`: thousands of lightweight devices in one process, for scale tests.

Each device (`swarmdevice.SwarmDevice`) speaks the CTWing protocol exactly as the
MicroPython agent does (firmware/fota/agent.py stays the reference for device behaviour):
inform on connect, take the notice, download from the guide's address with Range resume,
check the MD5 (and SHA-256), report progress with the real step codes, "reboot" and inform
the new version. They share one asyncio loop, one aiohttp session (at most `http_limit`
downloads at once) and the broker; each has its own MQTT connection (aiomqtt on paho-mqtt,
clean session, client id = device id).

Interface (used by the CLI, the tests and bench/bench_scaleout.py):

    from fota_host.sim.swarm import SwarmOptions, run_swarm
    result = run_swarm(SwarmOptions(count=1000, broker="mqtt://127.0.0.1:1883",
                                    version="1.0.0", until_version="2.0.0", timeout=600))
    result.to_json()  # {"devices", "upgraded", "failed", "duplicate_notices", "seconds", ...}
    result.ok         # every device upgraded

`run_swarm` blocks (it runs its own event loop; call it from a thread to do other work
meanwhile, and set the `stop` event to end it early). `on_status(snapshot)` gets a
`SwarmResult` about twice a second; `snapshot.connect_seconds` is set once every device
has informed (its PUBACK came). Start the task only once the *platform* has handled those
informs (every id in its device list): an inform handled after the notice went out makes
the platform notify again, counted in `duplicate_notices`. It raises `SwarmError` with a clear
message for bad options, an unreachable broker, a refused login or too few file
descriptors. Device ids are `id_prefix` + the number zero-padded to at least 5 digits
(`swarm-00001`).

Memory: about 21 KiB per idle connected device (RSS growth / N, measured with 2 000 and
10 000 devices on CPython 3.11, aiomqtt 2.5.1, paho-mqtt 2.2.0), 29 KiB over a whole
10 000-device upgrade (340 MiB RSS, 10 ms of CPU per device); `kib_per_device` in the
result is the figure of each run (peak RSS growth over the devices' start, / N).
One file descriptor per device plus one per download in flight: the soft limit is raised to
the hard limit and a count that cannot fit is refused before anything starts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import gc
import math
import random
import re
import resource
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from .swarmshared import Broker, Shared, SwarmOptions

__all__ = ["SwarmError", "SwarmOptions", "SwarmResult", "device_ids", "run_swarm", "swarm"]

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
# device ids are MQTT client ids and topic levels, and the platform's device ids
ID_PREFIX_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,31}\Z")
ID_PREFIX_RULE = ("1-32 characters: a letter or digit first, then letters, digits, '_', '.', "
                  "':' or '-' (no '/', '+', '#': device ids are MQTT client ids and topic levels)")
FLOAT_OPTIONS = ("timeout", "fail_rate", "slow_rate", "connect_rate", "start_delay",
                 "reboot_delay")
FD_RESERVE = 64          # files, the event loop, the executor, pipes...


class SwarmError(Exception):
    """Options or surroundings that keep the swarm from starting (a clear message)."""


@dataclass
class SwarmResult:
    devices: int
    upgraded: int
    failed: int
    duplicate_notices: int
    seconds: float
    pending: int = 0                     # neither upgraded nor failed (at the timeout)
    timed_out: bool = False
    stopped: bool = False
    connect_seconds: float | None = None     # until every device had informed once
    cpu_seconds: float = 0.0             # this process's CPU time (user + system)
    kib_per_device: float = 0.0
    rss_mib: float = 0.0
    fd_limit: int = 0
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.upgraded == self.devices

    def to_json(self) -> dict[str, Any]:
        """The JSON line: the five interface keys first, then the details."""
        out = dataclasses.asdict(self)     # field order: the interface keys first
        out.update(out.pop("stats"))
        return out


def parse_broker(url: str) -> Broker:
    """mqtt://[user[:password]@]host[:port] (mqtts:// for TLS); SwarmError if it is not."""
    try:
        p = urlsplit(url)
        port = p.port
    except ValueError as exc:
        raise SwarmError(f"--broker {url!r}: {exc}") from None
    if p.scheme not in DEFAULT_PORTS:
        raise SwarmError(f"--broker {url!r}: give mqtt://HOST:PORT or mqtts://HOST:PORT")
    if not p.hostname:
        raise SwarmError(f"--broker {url!r}: no host")
    return Broker(p.hostname, port or DEFAULT_PORTS[p.scheme], p.scheme == "mqtts",
                  unquote(p.username) if p.username else None,
                  unquote(p.password) if p.password else None)


def device_ids(prefix: str, count: int) -> list[str]:
    """`prefix` + 1..count zero-padded to at least 5 digits (`swarm-00001`)."""
    width = max(5, len(str(count)))
    return [f"{prefix}{i:0{width}d}" for i in range(1, count + 1)]


def check_options(opts: SwarmOptions) -> Broker:
    if opts.count < 1:
        raise SwarmError(f"--count must be at least 1 (got {opts.count})")
    for name in FLOAT_OPTIONS:
        if not math.isfinite(getattr(opts, name)):
            raise SwarmError(f"--{name.replace('_', '-')} must be a finite number "
                             f"(got {getattr(opts, name)})")
    if not 1 <= opts.keepalive <= 65535:
        raise SwarmError(f"--keepalive must be 1 to 65535 seconds (got {opts.keepalive})")
    if not ID_PREFIX_RE.match(opts.id_prefix):
        raise SwarmError(f"--id-prefix {opts.id_prefix!r}: {ID_PREFIX_RULE}")
    for name in ("fail_rate", "slow_rate"):
        if not 0.0 <= getattr(opts, name) <= 1.0:
            raise SwarmError(f"--{name.replace('_', '-')} must be a fraction from 0 to 1")
    if opts.timeout <= 0:
        raise SwarmError("--timeout must be more than 0 seconds")
    if opts.connect_rate <= 0 or min(opts.http_limit, opts.slow_bps, opts.connect_window) < 1:
        raise SwarmError("--connect-rate, --connect-window, --http-limit and the slow rate "
                         "must be positive")
    if opts.topic_prefix.count("{device}") != 1:
        raise SwarmError("the topic prefix must contain {device} once")
    return parse_broker(opts.broker)


def raise_fd_limit(need: int) -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; SwarmError if `need` won't fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, need, 1 << 20)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    if need > soft:
        raise SwarmError(
            f"{need} file descriptors needed (one per device, one per download in flight, "
            f"{FD_RESERVE} spare) but this process may open {soft} (hard limit {hard}): "
            "lower --count or --http-limit, or raise the hard limit (ulimit -Hn as root, "
            "LimitNOFILE= in a systemd unit, /etc/security/limits.conf)")
    return soft


def _tls(opts: SwarmOptions) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=opts.ca)
    if opts.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def _probe(shared: Shared, device_id: str) -> None:
    """One MQTT connect as the first device: a clear error now instead of N retry loops."""
    import aiomqtt

    b = shared.broker
    where = f"{'mqtts' if b.tls else 'mqtt'}://{b.host}:{b.port}"
    try:
        async with shared.new_client(device_id):
            pass
    except aiomqtt.MqttCodeError as exc:
        raise SwarmError(f"broker {where} refused {device_id}: {exc}") from None
    except (aiomqtt.MqttError, OSError, asyncio.TimeoutError) as exc:
        raise SwarmError(f"broker {where} unreachable: {exc or type(exc).__name__}") from None


def _quiet_stale_writer(stats: dict[str, int]) -> Callable[[Any, dict[str, Any]], None]:
    """An event loop exception handler that counts (in `loop_errors`) instead of printing
    aiomqtt's add_writer for a socket paho closed meanwhile (EBADF: a connection that
    ends right after a write), and drops aiomqtt's unread "Unexpected disconnection" of a
    broken link (the device counts it in link_errors); the default handler else."""

    import aiomqtt

    def handle(loop: Any, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno == errno.EBADF and \
                "add_writer" in repr(context.get("handle")):
            stats["loop_errors"] += 1
            return
        if isinstance(exc, aiomqtt.MqttError) and "future" in context:
            return      # aiomqtt's "disconnected" future of a link that broke: counted
        loop.default_exception_handler(context)

    return handle


def _pick(rng: random.Random, count: int, rate: float) -> set[int]:
    return set(rng.sample(range(count), round(count * rate)))


async def swarm(opts: SwarmOptions, on_status: Callable[[SwarmResult], None] | None = None,
                stop: threading.Event | None = None) -> SwarmResult:
    """The swarm in the running event loop (see `run_swarm`)."""
    import aiohttp
    import psutil

    from .swarmdevice import SwarmDevice

    broker = check_options(opts)
    fd_limit = raise_fd_limit(opts.count + opts.http_limit + FD_RESERVE)
    ids = device_ids(opts.id_prefix, opts.count)
    if opts.credentials is not None:
        missing = [d for d in ids if d not in opts.credentials]
        if missing:
            raise SwarmError(f"the credentials have no password for {missing[0]} "
                             f"({len(missing)} of {len(ids)} devices missing)")
    tls = _tls(opts) if broker.tls or opts.ca or opts.insecure else None
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=opts.http_timeout,
                                    sock_read=opts.http_timeout)
    # One connection per download, closed after it (the device sends Connection: close):
    # no pooled connection that the server has meanwhile closed ("Server disconnected").
    connector = aiohttp.TCPConnector(limit=opts.http_limit, ssl=tls if tls else True,
                                     force_close=True)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        shared = Shared(opts, broker, session, tls)
        loop = asyncio.get_running_loop()
        loop_handler = loop.get_exception_handler()
        loop.set_exception_handler(_quiet_stale_writer(shared.stats))
        await asyncio.wait_for(_probe(shared, ids[0]), opts.mqtt_timeout + 5)
        rng = random.Random(opts.seed)
        fails, slows = _pick(rng, opts.count, opts.fail_rate), _pick(rng, opts.count,
                                                                    opts.slow_rate)
        proc = psutil.Process()
        gc.collect()
        base_rss = peak_rss = proc.memory_info().rss
        devices = [SwarmDevice(shared, d, i in fails, i in slows) for i, d in enumerate(ids)]
        start, cpu0 = time.monotonic(), sum(proc.cpu_times()[:2])
        tasks = [asyncio.ensure_future(d.run()) for d in devices]

        def snapshot(**extra: Any) -> SwarmResult:
            upgraded = sum(d.state == "upgraded" for d in devices)
            failed = sum(d.state == "failed" and d.task is None for d in devices)
            return SwarmResult(
                opts.count, upgraded, failed, shared.stats["duplicate_notices"],
                round(time.monotonic() - start, 2), opts.count - upgraded - failed,
                connect_seconds=connected_at,
                cpu_seconds=round(sum(proc.cpu_times()[:2]) - cpu0, 2),
                kib_per_device=round((peak_rss - base_rss) / 1024 / opts.count, 1),
                rss_mib=round(peak_rss / 2**20, 1), fd_limit=fd_limit,
                stats=dict(shared.stats), **extra)

        settled_at, shown_at, extra = None, 0.0, {}
        connected_at: float | None = None
        try:
            while True:
                await asyncio.sleep(0.2)
                now = time.monotonic()
                peak_rss = max(peak_rss, proc.memory_info().rss)
                if connected_at is None and shared.stats["first_informs"] == opts.count:
                    connected_at = round(now - start, 2)
                if on_status is not None and now - shown_at >= 0.5:
                    shown_at = now
                    on_status(snapshot())
                if all(d.settled for d in devices):
                    settled_at = settled_at or now
                    if now - settled_at >= opts.settle:
                        break
                else:
                    settled_at = None
                if now - start >= opts.timeout:
                    extra["timed_out"] = True
                    break
                if stop is not None and stop.is_set():
                    extra["stopped"] = True
                    break
            result = snapshot(**extra)
        finally:
            for job in [*tasks, *shared.jobs]:
                job.cancel()
            await asyncio.wait_for(asyncio.gather(*tasks, *shared.jobs,
                                                  return_exceptions=True), 60)
            loop.set_exception_handler(loop_handler)
    return result


def run_swarm(opts: SwarmOptions, on_status: Callable[[SwarmResult], None] | None = None,
              stop: threading.Event | None = None) -> SwarmResult:
    """Run the swarm until every device runs `until_version` (or failed for good), the
    timeout, or `stop` is set; `on_status` gets a snapshot about twice a second."""
    from concurrent.futures import ThreadPoolExecutor

    async def main() -> SwarmResult:
        # aiomqtt runs paho's blocking connect() in the default executor: more threads,
        # more connections a second.
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=opts.connect_threads))
        return await swarm(opts, on_status, stop)

    return asyncio.run(main())
