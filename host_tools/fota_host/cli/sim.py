"""`fota sim`: simulated devices on the MicroPython unix port."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import click

from .output import Finite, emit_json, fail

FLASH = click.option("--flash", type=click.Path(file_okay=False, path_type=Path), required=True,
                     help="Simulated flash folder (created on first use).")
SIM_BOARDS = ["esp32", "esp32s3", "esp32c3", "esp32c6", "pico_w", "pico2_w"]  # boards/chips.py
BOARD = click.option("--board", type=click.Choice(SIM_BOARDS), default="esp32",
                     show_default=True, help="The board kind the flash folder simulates (its "
                     "chip id and OTA slot size: boards/chips.py).")


@click.group("sim")
def sim() -> None:
    """Simulated ESP32 and Pico W boards on the MicroPython unix port."""


@sim.command("init")
@FLASH
@BOARD
@click.option("--version", "version", help="Seed an empty flash with an image of this version.")
def init_cmd(flash: Path, board: str, version: str | None) -> None:
    """Create a simulated flash folder."""
    from ..sim.flash import SimError
    from ..sim.update import prepare

    try:
        emit_json(prepare(flash, board, version))
    except SimError as exc:
        fail(str(exc))


@sim.command("update")
@FLASH
@BOARD
@click.argument("source")
@click.option("--md5", required=True, help="Expected MD5 (32 hex digits).")
@click.option("--size", required=True, type=click.IntRange(min=1), help="Image size in bytes.")
@click.option("--sha256", help="Expected SHA-256 as well.")
@click.option("--heap", default="64K", show_default=True,
              help="MicroPython heap (-X heapsize; at least 32K for the engine).")
@click.option("--task", default=0, type=int, show_default=True,
              help="Task id recorded in the resume journal.")
@click.option("--ca", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CA certificate (PEM) for https sources.")
@click.option("--insecure", is_flag=True, help="Allow https without a CA (not verified).")
@click.option("--no-readback", is_flag=True, help="Skip re-reading the slot after writing.")
@click.option("--trust", "trust", multiple=True, metavar="DIGEST|KEY.pem",
              help="A signing key the device trusts: its digest or a PEM key file (repeat, "
                   "up to three). Images must then carry a valid signature by one of them.")
@click.option("--allow-unsigned", is_flag=True,
              help="With --trust: also take images that carry no signature at all.")
def update_cmd(flash: Path, board: str, source: str, md5: str, size: int, sha256: str | None,
               heap: str, task: int, ca: Path | None, insecure: bool, no_readback: bool,
               trust: tuple[str, ...], allow_unsigned: bool) -> None:
    """One update from SOURCE (URL or file) into the simulated flash; prints one JSON line."""
    import re
    import sys

    from ..sim.device import parse_heap
    from ..sim.flash import SimError
    from ..sim.update import update

    if not re.fullmatch(r"[0-9a-fA-F]{32}", md5):
        fail("--md5 must be 32 hex digits")
    if sha256 and not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        fail("--sha256 must be 64 hex digits")
    try:
        heap = parse_heap(heap, 32 * 1024)
    except ValueError as exc:
        fail(str(exc))
    trusted = _trusted(trust)
    scheme = re.match(r"([A-Za-z][A-Za-z0-9+.-]*):/", source)
    if scheme and scheme.group(1).lower() not in ("http", "https"):
        fail(f"SOURCE {source!r}: unsupported URL scheme {scheme.group(1)!r}; "
             "give an http:// or https:// address, or a file")
    if not scheme and not Path(source).is_file():
        fail(f"SOURCE {source!r}: no such file (give an http:// or https:// address, or a file)")
    try:
        report = update(flash, board, source, md5, size, sha256, heap, task,
                               readback=not no_readback, ca=ca, insecure=insecure,
                               trust=trusted, allow_unsigned=allow_unsigned)
    except SimError as exc:
        fail(str(exc))
    emit_json(report)
    sys.exit(0 if report.get("ok") else 1)


def _trusted(trust: tuple[str, ...]) -> list[str]:
    """`--trust` values as key digests (a digest, or a PEM key file's)."""
    from ..boards.provision import ProvisionError, trusted_digests

    try:
        return trusted_digests(trust)
    except ProvisionError as exc:
        fail(str(exc))
        raise


@sim.command("status")
@FLASH
def status_cmd(flash: Path) -> None:
    """Board, running and boot slots, pending verify, versions per slot."""
    from ..sim.flash import SimError, status

    try:
        emit_json(status(flash))
    except SimError as exc:
        fail(str(exc))


@sim.command("boot")
@FLASH
def boot_cmd(flash: Path) -> None:
    """A simulated hard reset, applying the bootloader's rollback rules."""
    from ..sim.flash import SimError, boot

    try:
        emit_json(boot(flash))
    except SimError as exc:
        fail(str(exc))


@sim.command("confirm")
@FLASH
def confirm_cmd(flash: Path) -> None:
    """Confirm the running image (as the agent does once healthy)."""
    from ..sim.flash import SimError, confirm

    try:
        emit_json(confirm(flash))
    except SimError as exc:
        fail(str(exc))


@sim.command("device")
@FLASH
@BOARD
@click.option("--id", "device_id", required=True, help="Device id (MQTT client id).")
@click.option("--broker", required=True, help="mqtt://HOST:PORT (mqtts:// for TLS).")
@click.option("--prefix", default=None,
              help="Topic prefix (default devices/<id>; '' for CTWing's literal topics).")
@click.option("--version", "version", help="Seed an empty flash with an image of this version.")
@click.option("--heap", default="128K", show_default=True,
              help="MicroPython heap (-X heapsize; at least 64K for the agent).")
@click.option("--trust", "trust", multiple=True, metavar="DIGEST|KEY.pem",
              help="A signing key the device trusts: its digest or a PEM key file (repeat, "
                   "up to three). Images must then carry a valid signature by one of them.")
def device_cmd(flash: Path, board: str, device_id: str, broker: str, prefix: str | None,
               version: str | None, heap: str, trust: tuple[str, ...]) -> None:
    """Run the agent as a simulated device in the foreground (Ctrl-C stops it).

    Hard resets are supervised: the device boots again through the simulated
    bootloader, like a board rebooting into its new image.
    """
    import sys

    from ..platform.validate import device_id_problem
    from ..sim.device import MIN_AGENT_HEAP, SimDevice, config_problem, device_config, parse_heap
    from ..sim.flash import SimError

    problem = device_id_problem(device_id)
    if problem:  # the device would run with OTA disabled (its config refused): say so now
        fail(f"--id: {problem}")
    try:
        heap = parse_heap(heap, MIN_AGENT_HEAP)
        config = {"trusted_keys": _trusted(trust)} if trust else None
        problem = config_problem(device_config(device_id, broker, prefix, **(config or {})))
        if problem:
            fail(f"the device config is refused: {problem}")
        dev = SimDevice(flash, board, device_id, broker, prefix, version, heap, log=sys.stdout,
                        config=config)
    except (SimError, ValueError) as exc:
        fail(str(exc))
    stop = _StopSignals(dev.interrupt)
    thread = dev.start()
    stop.wait(thread)
    dev.stop()
    thread.join(10)
    click.echo(f"sim device: {device_id} stopped", err=True)


class _StopSignals:
    """SIGINT/SIGTERM/SIGHUP, caught from before the devices start (made then): a signal
    between their start and the handlers would otherwise kill the supervisor with the
    default action, or raise KeyboardInterrupt through it (#10, found by the sim stop
    tests). `on_signal` runs in the handler: it must not block."""

    def __init__(self, on_signal: Callable[[], None]) -> None:
        import signal

        self.done = threading.Event()
        self.why = "thread ended"
        self._on_signal = on_signal
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._caught)

    def _caught(self, signum: int, _frame: object) -> None:
        import signal

        self.why = signal.Signals(signum).name
        self.done.set()
        self._on_signal()

    def wait(self, thread: threading.Thread, duration: float | None = None) -> str:
        """Until a signal, `thread` ends or `duration` (seconds) passes; returns why."""
        import time

        end = None if duration is None else time.monotonic() + duration
        while not self.done.is_set() and thread.is_alive():
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                return "time is up"
            self.done.wait(0.5 if left is None else min(0.5, left))
        return self.why


# fault flags that act only together with another one
_FAULT_NEEDS = {
    **{f"--http-{k}": "--http-proxy" for k in
       ("upstream", "rate", "drop-after", "drop-count", "corrupt-at", "delay", "delay-count")},
    "--offline-for": "--offline", "--pause-for": "--pause",
}


MAX_FLEET = 1000
POSITIVE = Finite(min=0, min_open=True)


@sim.command("fleet")
@click.option("--count", type=click.IntRange(min=1, max=MAX_FLEET), required=True,
              help=f"Number of devices, at most {MAX_FLEET}: each is a MicroPython process"
                   " with a flash folder (`fota sim swarm` simulates tens of thousands).")
@click.option("--broker", required=True, help="mqtt://HOST:PORT the devices connect to.")
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for the flash folders and logs (DIR/<id>/, DIR/logs/<id>.log).")
@click.option("--boards", default="esp32,pico_w", show_default=True,
              help="Board kinds, assigned in turn.")
@click.option("--version", "version", default="1.0.0", show_default=True,
              help="Seed empty flash folders with an image of this version.")
@click.option("--heap", default="128K", show_default=True,
              help="MicroPython heap per device (at least 64K for the agent).")
@click.option("--credentials", "credentials_file",
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="credentials.json written by `fota platform mosquitto-config`: each device "
                   "logs in to the broker with its id as user name and its own password.")
@click.option("--prefix-id", default="dev-", show_default=True,
              help="Device ids are PREFIX001, PREFIX002, ...")
@click.option("--topic-prefix", default=None, help="Topic prefix (default devices/<id>).")
@click.option("--health-deadline", type=POSITIVE, default=None,
              help="Seconds a new image has to prove healthy (device default 60).")
@click.option("--config", "config_json", default=None,
              help="Extra device config keys as a JSON object (merged into each config).")
@click.option("--trust", "trust", multiple=True, metavar="DIGEST|KEY.pem",
              help="A signing key every device trusts: its digest or a PEM key file (repeat, "
                   "up to three). Images must then carry a valid signature by one of them.")
@click.option("--power-cut", type=click.IntRange(min=0), default=0,
              help="FAULT: N devices lose power once in the middle of a download.")
@click.option("--offline", type=click.IntRange(min=0), default=0,
              help="FAULT: N devices are powered on --offline-for seconds late.")
@click.option("--offline-for", type=POSITIVE, default=10.0, show_default=True,
              help="Seconds the --offline devices stay powered off.")
@click.option("--pause", type=click.IntRange(min=0), default=0,
              help="FAULT: N devices freeze --pause-for seconds mid-download (SIGSTOP; "
                   "with the platform's --device-timeout shorter: timed out).")
@click.option("--pause-for", type=POSITIVE, default=5.0, show_default=True,
              help="Seconds the --pause devices stay frozen.")
@click.option("--mqtt-outage", default=None, metavar="AT,SECONDS",
              help="FAULT: devices reach the broker through a proxy that cuts every link "
                   "AT seconds after start and refuses SECONDS long (a broker restart).")
@click.option("--http-proxy", type=int, default=None, metavar="PORT",
              help="Run a fault proxy for downloads on PORT (start the platform with "
                   "--public-url http://127.0.0.1:PORT); needs --http-upstream.")
@click.option("--http-upstream", default=None, help="The platform's http://HOST:PORT.")
@click.option("--http-rate", type=POSITIVE, default=None, help="FAULT: bytes/s per download.")
@click.option("--http-drop-after", type=click.IntRange(min=0), default=None,
              help="FAULT: cut downloads after this many bytes ...")
@click.option("--http-drop-count", type=click.IntRange(min=0), default=None,
              help="... for the first N connections (default: all).")
@click.option("--http-corrupt-at", type=click.IntRange(min=0), default=None,
              help="FAULT: flip the body byte at this offset of every download (step -3).")
@click.option("--http-delay", type=POSITIVE, default=None,
              help="FAULT: hold each download request this many seconds before the server "
                   "sees it (with the platform's --token-ttl shorter: token expired) ...")
@click.option("--http-delay-count", type=click.IntRange(min=0), default=None,
              help="... for the first N connections (default: all).")
@click.option("--seed", type=int, default=1, show_default=True,
              help="Which devices the faults pick.")
@click.option("--for", "duration", type=POSITIVE, default=None,
              help="Stop after this many seconds (default: until Ctrl-C or SIGTERM).")
def fleet_cmd(count: int, broker: str, data: Path, boards: str, version: str, heap: str,
              credentials_file: Path | None, prefix_id: str, topic_prefix: str | None,
              health_deadline: float | None,
              config_json: str | None, trust: tuple[str, ...], power_cut: int, offline: int,
              offline_for: float,
              pause: int, pause_for: float, mqtt_outage: str | None, http_proxy: int | None,
              http_upstream: str | None, http_rate: float | None, http_drop_after: int | None,
              http_drop_count: int | None, http_corrupt_at: int | None,
              http_delay: float | None, http_delay_count: int | None, seed: int,
              duration: float | None) -> None:
    """Run COUNT simulated devices until Ctrl-C; prints one JSON line with the final states.

    Each device has its own flash folder and id and reboots through the simulated
    bootloader. Faults are flags (docs/fleet.md).
    """
    import json

    from ..sim.device import MIN_AGENT_HEAP, parse_heap
    from ..sim.faults import DeviceFaults, LinkFaults
    from ..sim.flash import SimError
    from ..sim.fleet import Fleet, HttpProxy
    from .simswarm import read_credentials

    try:
        heap = parse_heap(heap, MIN_AGENT_HEAP)
    except ValueError as exc:
        fail(str(exc))
    credentials = read_credentials(credentials_file)

    kinds = tuple(b.strip() for b in boards.split(",") if b.strip())
    if not kinds or any(b not in SIM_BOARDS for b in kinds):
        fail(f"--boards: a comma-separated list of {', '.join(SIM_BOARDS)}")
    config: dict = {}
    if config_json:
        try:
            config = json.loads(config_json)
        except ValueError as exc:
            fail(f"--config is not JSON: {exc}")
        if not isinstance(config, dict):
            fail("--config must be a JSON object")
    if health_deadline is not None:
        config["health_deadline_s"] = health_deadline
    if trust:
        config["trusted_keys"] = _trusted(trust)
    outage = None
    if mqtt_outage:
        try:
            at, secs = (float(x) for x in mqtt_outage.split(","))
            if not (0 <= at < 1e9 and 0 < secs < 1e9):   # also nan and inf
                raise ValueError
        except ValueError:
            fail("--mqtt-outage must be AT,SECONDS (AT >= 0, SECONDS > 0)")
        outage = (at, secs)
    ctx = click.get_current_context()
    given = {name for name in ctx.params
             if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT}
    for flag, needs in _FAULT_NEEDS.items():
        if flag.lstrip("-").replace("-", "_") in given and \
                needs.lstrip("-").replace("-", "_") not in given:
            fail(f"{flag} needs {needs}: without it the fault would be ignored")
    http = None
    if http_proxy is not None:
        if not http_upstream:
            fail("--http-proxy needs --http-upstream http://HOST:PORT (the platform)")
        from urllib.parse import urlparse

        up = urlparse(http_upstream)
        if up.scheme != "http" or not up.hostname:
            fail(f"--http-upstream {http_upstream!r}: give the platform's http://HOST:PORT "
                 f"({'unknown scheme ' + repr(up.scheme + '://') if up.scheme else 'no scheme'})")
        http = HttpProxy(http_proxy, http_upstream, LinkFaults(
            http_rate, http_drop_after, http_drop_count, http_corrupt_at, http_delay,
            http_delay_count))
    faults = DeviceFaults(power_cut, offline, offline_for, pause, pause_for, outage, seed)
    try:
        fleet = Fleet(data, count, broker, kinds, version, heap, prefix_id, topic_prefix,
                      config, faults, http, credentials=credentials).create()
    except (SimError, ValueError, OSError) as exc:
        fail(str(exc))
    stop = _StopSignals(lambda: None)
    fleet.start()
    noun = "device" if count == 1 else "devices"
    click.echo(f"fleet: {count} {noun} under {data} (logs in {data}/logs); "
               "Ctrl-C stops it", err=True)
    forever = threading.Thread(target=threading.Event().wait, daemon=True)
    forever.start()
    why = stop.wait(forever, duration)
    click.echo(f"fleet: stopping ({why})", err=True)
    memory = fleet.memory()
    fleet.stop()
    states = fleet.statuses()
    emit_json({"devices": count, "memory": memory, "events": fleet.events,
               "versions": {k: v.get("version") for k, v in states.items()}})


from .simswarm import swarm_cmd  # noqa: E402 - `fota sim swarm` (#20)

sim.add_command(swarm_cmd)

COMMANDS: list[click.Command] = [sim]
