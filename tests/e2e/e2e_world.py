"""End to end: the platform (child process), a broker (embedded amqtt or mosquitto), simulated
devices running the real device code, and faults between them.

`world` is parametrized over both brokers. Everything is small and fast: 96-128 KiB images,
4-second health deadlines, downloads slowed by a proxy only where a fault must land in the
middle of one.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from fota_host.images import bundle
from fota_host.images import synthetic as images
from fota_host.platform.process import start_platform
from fota_host.sim.device import SimDevice
from fota_host.sim.faults import FaultProxy, LinkFaults
from helpers import Mosquitto

OLD, NEW = "1.0.1", "2.0.0"
SIZE = {"esp32": 128 * 1024, "pico_w": 96 * 1024}
# A new image has 15 s to come online and be confirmed: plenty on a busy machine (the
# rollback tests set a shorter deadline, which they wait out).
FAST = {"health_deadline_s": 15, "progress_interval_s": 0.5,
        "broker": {"keepalive": 4, "timeout_s": 2}, "download": {"timeout_s": 3,
                                                                 "start_delay_s": 0}}
BOOT_LINE = re.compile(r"^\[sim\] boot \d+: running (\S+) version (\S+)( \(trial\))?", re.M)


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/", 1)[0])


class World:
    def __init__(self, tmp: Path, broker_kind: str) -> None:
        self.tmp = tmp
        self.kind = broker_kind
        self.mosquitto: Mosquitto | None = None
        if broker_kind == "mosquitto":
            mq_dir = tmp / "mq"
            mq_dir.mkdir()
            self.mosquitto = Mosquitto(mq_dir).start()
        self.platform: Any = None
        self.proxy: FaultProxy | None = None
        self.devices: dict[str, SimDevice] = {}
        self.logs: list[Any] = []
        self.images: dict[str, bytes] = {}

    # -- the two servers --
    def start(self, proxy: dict[str, Any] | None = None, **options: Any) -> World:
        """The platform; with `proxy` (LinkFaults fields), devices download through a FaultProxy.

        The platform binds free ports itself (0), which a restart keeps: ports picked here
        and bound later were taken meanwhile by other programs on a busy machine ("Address
        already in use")."""
        if proxy is not None:
            # it listens first (its address is the public URL); its target is known later
            self.proxy = FaultProxy(0, faults=LinkFaults(**proxy))
            options["public_url"] = self.proxy.url
        options.setdefault("push_rate", 6000)
        self.platform = start_platform(
            self.tmp / "platform", broker=self.mosquitto.url if self.mosquitto else None,
            http_port=0, mqtt_port=0, **options)
        self.platform.options.http_port = _port(self.platform.api)
        if not self.mosquitto:
            self.platform.options.mqtt_port = _port(self.platform.broker)
        if self.proxy:
            self.proxy.target = ("127.0.0.1", self.platform.options.http_port)
        self.api = self.platform.client()
        return self

    @property
    def broker_url(self) -> str:
        return self.mosquitto.url if self.mosquitto else self.platform.broker

    def restart_broker(self, down: float = 1.0) -> None:
        """mosquitto: restarted on its port. Embedded: it lives in the platform, so the
        platform is killed (no clean shutdown) and started again on the same ports."""
        if self.mosquitto:
            self.mosquitto.restart(down)
        else:
            self.platform.kill()
            time.sleep(down)
            self.platform.start()

    # -- devices --
    def device(self, dev_id: str, board: str = "esp32", start: bool = True,
               **config: Any) -> SimDevice:
        cfg = {**FAST, **config}
        for key in ("broker", "download"):
            cfg[key] = {**FAST[key], **config.get(key, {})}
        log = open(self.tmp / f"{dev_id}.log", "w")  # noqa: SIM115 - closed in close()
        self.logs.append(log)
        dev = SimDevice(self.tmp / dev_id, board, dev_id, self.broker_url, None, OLD, "128K",
                        log=log, config=cfg)
        dev.log_path = Path(log.name)  # type: ignore[attr-defined]
        self.devices[dev_id] = dev
        if start:
            dev.start()
        return dev

    def online(self, *dev_ids: str, timeout: float = 20) -> None:
        """Wait until the platform has seen each device inform its version."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = {d["id"] for d in self.api.list_devices()}
            if set(dev_ids) <= seen:
                return
            time.sleep(0.1)
        raise TimeoutError(f"devices not online: {set(dev_ids) - seen}")

    # -- what the operator does --
    def package(self, board: str, data: bytes | None = None, fail_health: bool = False,
                sign: str = "md5") -> dict[str, Any]:
        data = data if data is not None else images.sim_image(board, NEW, SIZE[board],
                                                              fail_health)
        path = self.tmp / f"{board}-{len(self.images)}.bin"
        path.write_bytes(data)
        pkg = self.api.create_package(file=str(path), version=NEW, sign=sign)
        self.images[pkg["id"]] = data
        return pkg

    def task(self, pkg: dict[str, Any], *dev_ids: str, start: bool = True) -> int:
        tid = self.api.create_task(package=pkg["id"], name="e2e")["id"]
        added = self.api.add_devices(tid, list(dev_ids))
        assert all(r["ok"] for r in added), added
        if start:
            self.api.start_task(tid)
        return tid

    def sub(self, tid: int, dev_id: str) -> dict[str, Any]:
        return next(r for r in self.api.get_task(tid)["devices"] if r["device"] == dev_id)

    def wait_sub(self, tid: int, dev_id: str, states: tuple[str, ...] = ("succeeded", "failed",
                 "cancelled", "timed_out"), timeout: float = 40) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                row = self.sub(tid, dev_id)
                if row["state"] in states:
                    return row
            except Exception:  # noqa: BLE001 - the platform may be restarting
                row = None
            if time.monotonic() > deadline:
                raise TimeoutError(f"{dev_id} in task {tid} never got to {states}: {row}\n"
                                   f"{self.log(dev_id)[-3000:]}")
            time.sleep(0.1)

    def log(self, dev_id: str) -> str:
        return self.devices[dev_id].log_path.read_text(errors="replace")  # type: ignore

    def close(self) -> None:
        for dev in self.devices.values():
            dev.stop()
        if self.proxy:
            self.proxy.close()
        if self.platform:
            self.platform.stop()
        if self.mosquitto:
            self.mosquitto.stop()
        for log in self.logs:
            log.close()


# -- final-state checks, on the device's side --
def boots(world: World, dev_id: str) -> list[tuple[str, str, bool]]:
    """(slot, version, trial) of every boot of the device, from its supervisor's log."""
    return [(m[1], m[2], bool(m[3])) for m in BOOT_LINE.finditer(world.log(dev_id))]


def slot_holds(dev: SimDevice, slot: str, image: bytes) -> bool:
    """The slot holds exactly the package's image (ESP32: raw bytes; Pico W: its files)."""
    if dev.board == "esp32":
        with open(dev.flash / slot, "rb") as f:
            return f.read(len(image)) == image
    folder = dev.flash / "slots" / slot
    files = {p.relative_to(folder).as_posix(): p.read_bytes()
             for p in folder.rglob("*") if p.is_file() and p.name != "manifest.json"}
    return files == bundle.unpack(image).files


def assert_only_whole_images_booted(world: World, dev_id: str, image: bytes) -> None:
    """Every boot ran the old version or the new one, and the new one only from a slot
    that holds the complete, verified package image."""
    dev = world.devices[dev_id]
    seen = boots(world, dev_id)
    assert seen, "the device never booted"
    for slot, version, _trial in seen:
        assert version in (OLD, NEW), f"{dev_id} booted {version} from {slot}"
        if version == NEW:
            assert slot_holds(dev, slot, image), f"{dev_id} booted a partial image in {slot}"


def assert_stayed_on_old(world: World, dev_id: str) -> None:
    st = world.devices[dev_id].status()
    assert st["version"] == OLD and not st["pending"], st
    assert all(v == OLD for _, v, _ in boots(world, dev_id)), boots(world, dev_id)


def assert_upgraded(world: World, dev_id: str, image: bytes) -> None:
    dev = world.devices[dev_id]
    st = dev.wait_for(lambda s: s["version"] == NEW and not s["pending"], timeout=15)
    assert slot_holds(dev, st["running"], image)
    assert_only_whole_images_booted(world, dev_id, image)
