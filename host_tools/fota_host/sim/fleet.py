"""A fleet of simulated devices: N `SimDevice`s, each with its own flash folder, device id
and log, supervised in threads of one process, with optional faults (`faults.DeviceFaults`,
and a `faults.FaultProxy` on the broker or download path; docs/fleet.md).

Layout under the data folder:
    DIR/fleet.json            ids, boards, broker, faults
    DIR/<id>/                 the device's flash folder (its filesystem)
    DIR/logs/<id>.log         the device's console and its supervisor's boot lines
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlparse

from ..platform.validate import device_id_problem
from .device import SimDevice, broker_config, config_problem, device_config
from .faults import DeviceFaults, FaultProxy, LinkFaults

JOURNAL = "fota_journal.json"   # the agent's resume journal, in the flash folder


@dataclass
class HttpProxy:
    """A FaultProxy before the file server (the platform must run with --public-url to it).

    `proxy`: one already listening (made before the platform, so its port is known without
    picking a free port and binding it later, which races): the fleet points it at
    `upstream` and gives it `faults`; `port` is then ignored.
    """

    port: int
    upstream: str               # http://HOST:PORT of the platform's file server
    faults: LinkFaults = field(default_factory=LinkFaults)
    proxy: FaultProxy | None = None


@dataclass
class Fleet:
    data: Path
    count: int
    broker: str
    boards: tuple[str, ...] = ("esp32", "pico_w")
    version: str | None = "1.0.0"
    heap: str = "128K"
    prefix_id: str = "dev-"
    topic_prefix: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    faults: DeviceFaults = field(default_factory=DeviceFaults)
    http: HttpProxy | None = None
    poll_ms: int = 100          # the simulated main loop's period (0: the device's 20 ms)
    credentials: dict[str, str] | None = None   # device id -> broker password (user = id)

    def __post_init__(self) -> None:
        self.data = Path(self.data).resolve()
        self.devices: list[SimDevice] = []
        self.ids: list[str] = []
        self.logs: list[IO[str]] = []
        self.events: list[str] = []
        self.mqtt_proxy: FaultProxy | None = None
        self.http_proxy: FaultProxy | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._t0 = 0.0
        self._armed: dict[str, set[int]] = {}   # fault kind -> devices not hit yet

    # -- set-up --
    def device_id(self, i: int) -> str:
        return f"{self.prefix_id}{i + 1:0{max(3, len(str(self.count)))}d}"

    def _note(self, text: str) -> None:
        self.events.append(f"{time.monotonic() - self._t0:7.2f}s {text}")

    def create(self) -> Fleet:
        """Flash folders, configs and logs for every device (nothing runs yet).
        Everything is checked before the first folder is made."""
        broker_config(self.broker)
        for i in (0, self.count - 1):   # the shortest and the longest id
            problem = device_id_problem(self.device_id(i))
            if problem:
                raise ValueError(f"--prefix-id {self.prefix_id!r}: {problem}")
        first = device_config(self.device_id(0), self.broker, self.topic_prefix, **self.config)
        problem = config_problem(first)
        if problem:  # every device would run with OTA disabled
            raise ValueError(f"the device config is refused: {problem} (check --config)")
        if self.credentials is not None:
            missing = [self.device_id(i) for i in range(self.count)
                       if not self.credentials.get(self.device_id(i))]
            if missing:
                shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
                raise ValueError(
                    f"the credentials have no password for {shown}: issue them with `fota "
                    f"platform mosquitto-config --out DIR --device {missing[0]} ...` "
                    "(device ids are --prefix-id followed by 001, 002, ...)")
        self.data.mkdir(parents=True, exist_ok=True)
        (self.data / "logs").mkdir(exist_ok=True)
        broker = self.broker
        if self.faults.mqtt_outage:
            u = urlparse(self.broker)
            self.mqtt_proxy = FaultProxy(u.port or 1883, u.hostname or "127.0.0.1")
            broker = f"{u.scheme}://{u.netloc.rsplit('@', 1)[0] + '@' if '@' in u.netloc else ''}" \
                     f"127.0.0.1:{self.mqtt_proxy.port}"
        if self.http:
            u = urlparse(self.http.upstream)
            if self.http.proxy is not None:
                self.http_proxy = self.http.proxy
                self.http_proxy.target = (u.hostname or "127.0.0.1", u.port or 80)
                self.http_proxy.faults = self.http.faults
            else:
                self.http_proxy = FaultProxy(u.port or 80, u.hostname or "127.0.0.1",
                                             port=self.http.port, faults=self.http.faults)
        for i in range(self.count):
            dev_id = self.device_id(i)
            board = self.boards[i % len(self.boards)]
            log = open(self.data / "logs" / f"{dev_id}.log", "a")  # noqa: SIM115 - closed in stop()
            self.logs.append(log)
            config = self.config
            if self.credentials is not None:      # user = device id, as the generated ACL has it
                config = {**config, "broker": {**config.get("broker", {}), "user": dev_id,
                                               "password": self.credentials[dev_id]}}
            dev = SimDevice(self.data / dev_id, board, dev_id, broker, self.topic_prefix,
                            self.version, self.heap, log=log, config=config)
            # read by fota_sim's main loop: sleep in one poll() of this many ms (the unix
            # port's sleep_ms wakes up every millisecond; idle fleets would burn a core)
            poll_file = dev.flash / "sim_poll_ms"
            if self.poll_ms:
                poll_file.write_text(str(self.poll_ms))
            else:
                poll_file.unlink(missing_ok=True)
            self.devices.append(dev)
            self.ids.append(dev_id)
        (self.data / "fleet.json").write_text(json.dumps({
            "broker": self.broker, "devices": [
                {"id": d, "board": dev.board, "flash": str(dev.flash)}
                for d, dev in zip(self.ids, self.devices, strict=True)],
            "faults": asdict(self.faults),
            "http_proxy": self.http_proxy.url if self.http_proxy else None}, indent=1))
        return self

    def _pick(self, n: int, salt: int) -> list[int]:
        rnd = random.Random(self.faults.seed * 1000 + salt)
        return sorted(rnd.sample(range(self.count), min(n, self.count)))

    def start(self) -> Fleet:
        if not self.devices:
            self.create()
        self._t0 = time.monotonic()
        f = self.faults
        late = set(self._pick(f.offline, 1)) if f.offline else set()
        for i, dev in enumerate(self.devices):
            if i not in late:
                self._threads.append(dev.start())
        if late:
            self._spawn(self._power_on_late, sorted(late))
        if f.power_cut:
            self._spawn(self._mid_download, self._pick(f.power_cut, 2), "power cut")
        if f.pause:
            self._spawn(self._mid_download, self._pick(f.pause, 3), "pause")
        if f.mqtt_outage:
            self._spawn(self._outage)
        return self

    def _spawn(self, fn: Any, *args: Any) -> None:
        t = threading.Thread(target=fn, args=args, daemon=True)
        t.start()
        self._threads.append(t)

    # -- faults --
    def _power_on_late(self, which: list[int]) -> None:
        for i in which:
            self._note(f"{self.ids[i]} offline for {self.faults.offline_for}s")
        if self._stop.wait(self.faults.offline_for):
            return
        for i in which:
            self._note(f"{self.ids[i]} powered on")
            self._threads.append(self.devices[i].start())

    def _mid_download(self, which: list[int], kind: str) -> None:
        """Hit each chosen device once, as soon as its download has a checkpoint."""
        todo = self._armed.setdefault(kind, set())
        todo.update(which)
        while todo and not self._stop.wait(0.01):
            for i in list(todo):
                dev = self.devices[i]
                try:
                    size = (dev.flash / JOURNAL).stat().st_size
                except OSError:
                    continue
                proc = dev.proc
                if size < 32 or proc is None or proc.poll() is not None:
                    continue      # no checkpoint yet
                todo.discard(i)
                if kind == "power cut":
                    self._note(f"{self.ids[i]} power cut mid-download")
                    dev.kill()
                else:
                    self._note(f"{self.ids[i]} frozen for {self.faults.pause_for}s")
                    self._spawn(self._freeze, proc, self.faults.pause_for)

    def _freeze(self, proc: Any, seconds: float) -> None:
        try:
            os.kill(proc.pid, signal.SIGSTOP)
            self._stop.wait(seconds)
        except ProcessLookupError:
            return
        finally:
            try:
                os.kill(proc.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass

    def _outage(self) -> None:
        at, seconds = self.faults.mqtt_outage or (0.0, 0.0)
        if self._stop.wait(at) or self.mqtt_proxy is None:
            return
        self._note(f"broker unreachable for {seconds}s")
        self.mqtt_proxy.refuse(seconds)

    # -- running --
    def statuses(self) -> dict[str, dict[str, Any]]:
        out = {}
        for dev_id, dev in zip(self.ids, self.devices, strict=True):
            try:
                out[dev_id] = dev.status()
            except Exception as exc:  # noqa: BLE001 - a status read mid-write
                out[dev_id] = {"error": str(exc)}
        return out

    def wait_versions(self, version: str, timeout: float,
                      ids: Iterable[str] | None = None) -> bool:
        """True once every device (or those of `ids`) runs `version`, confirmed."""
        wanted = set(self.ids if ids is None else ids)
        deadline = time.monotonic() + timeout
        while True:
            st = [s for d, s in self.statuses().items() if d in wanted]
            if all(s.get("version") == version and not s.get("pending") for s in st):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)

    def memory(self) -> dict[str, Any]:
        return fleet_memory(self.devices)

    def stop(self) -> None:
        self._stop.set()
        if self.http_proxy:
            self.http_proxy.close()
        if self.mqtt_proxy:
            self.mqtt_proxy.close()
        for dev in self.devices:
            dev.stopping.set()
        for dev in self.devices:
            dev.stop()
        for t in self._threads:
            t.join(timeout=5)
        for kind, todo in self._armed.items():
            for i in sorted(todo):
                self._note(f"{kind} armed for {self.ids[i]} never fired: no download of it "
                           "reached a checkpoint before the fleet stopped (it ended first, "
                           "or never started)")
            todo.clear()
        for log in self.logs:
            log.close()
        self.logs = []

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def fleet_memory(devices: list[SimDevice]) -> dict[str, Any]:
    """What the devices cost now: the micropython processes (RSS and USS: memory only that
    process uses), plus the supervising process's RSS shared out per device."""
    import psutil

    rss, uss, n = 0, 0, 0
    for dev in devices:
        proc = dev.proc
        if proc is None or proc.poll() is not None:
            continue
        try:
            mi = psutil.Process(proc.pid).memory_full_info()
        except (psutil.Error, OSError):
            continue
        rss += mi.rss
        uss += mi.uss
        n += 1
    me = psutil.Process().memory_info().rss
    mib = 1024 * 1024
    return {"measured": n,
            "micropython_rss_mib": round(rss / max(n, 1) / mib, 2),
            "micropython_uss_mib": round(uss / max(n, 1) / mib, 2),
            "supervisor_rss_mib_total": round(me / mib, 1),
            "supervisor_rss_mib_per_device": round(me / max(len(devices), 1) / mib, 3)}
