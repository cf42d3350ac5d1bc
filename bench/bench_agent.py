"""agent_min_heap_kib: the smallest heap in which the whole agent (MQTT, download,
engine, JSON) completes an upgrade through reboot and confirm, deployed as .mpy, and so
do the next few sizes above it (fragmentation makes the pass/fail boundary ragged).
The same for a signed image with the key trusted (agent_signed_min_heap_kib) and for a
delta update (delta_agent_min_heap_kib)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
from fota_host.images import synthetic as images
from fota_host.sim.device import SimDevice
from fota_host.sim.imageserver import ImageServer

SIZE = 1_468_000
WINDOW = 5  # sizes (KiB) above the figure that must pass too


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _upgrade_ok(root: Path, port: int, srv: ImageServer, info: dict, heap: str,
                timeout: float = 60, config: dict | None = None, name: str = "img.bin",
                flash_setup=None) -> bool:
    """One device, one notice: True when it informs the new version with the task id."""
    seen = threading.Event()
    dev_id = f"h{heap.lower()}"

    def on_message(_c, _u, m):
        msg = json.loads(m.payload)
        if msg.get("taskId") == 9 and msg["params"].get("version") == "2.0.0":
            seen.set()

    def on_connect(c, *_):
        c.subscribe(f"devices/{dev_id}/ota/inform", 1)

    peer = paho.Client(paho.CallbackAPIVersion.VERSION2)
    peer.on_message, peer.on_connect = on_message, on_connect
    peer.connect("127.0.0.1", port)
    peer.loop_start()
    shutil.rmtree(root / dev_id, ignore_errors=True)
    dev = SimDevice(root / dev_id, "esp32", dev_id, f"mqtt://127.0.0.1:{port}",
                    version="1.0.0", heap=heap,
                    config={"health_deadline_s": 10, **(config or {})},
                    log=open(root / f"{dev_id}.log", "w"))  # noqa: SIM115
    if flash_setup:
        flash_setup(dev.flash)
    dev.start()
    try:
        time.sleep(1.0)
        notice = {"taskId": 9, "payload": {
            "size": info["size"], "version": "2.0.0", "url": srv.notice_url(name),
            "md5": info["md5"], "token": "t", "module": "MCU"}}
        deadline = time.monotonic() + timeout
        # More than 3 boots: crashing (out of memory) rather than upgrading.
        while not seen.is_set() and time.monotonic() < deadline and dev.boots <= 3:
            if dev.boots == 1:          # (re)send until the download starts: it may be offline
                peer.publish(f"devices/{dev_id}/ota/upgrade", json.dumps(notice), qos=1)
            seen.wait(2)
        return _confirmed(dev, seen)
    finally:
        dev.stop()
        peer.loop_stop()
        peer.disconnect()


def _confirmed(dev: SimDevice, seen: threading.Event) -> bool:
    if not seen.is_set():
        return False
    try:
        dev.wait_for(lambda s: not s["pending"] and s["version"] == "2.0.0", timeout=10)
        return True
    except TimeoutError:
        return False


# What an upgrading ESP32 agent holds as code: the device modules and the simulation's
# stand-ins for the ESP32 port's built-in modules.
AGENT_MODULES = ("umqtt.simple", "fota.mqttcodec", "fota.mqtt", "fota.protocol", "fota.agent",
                 "fota.engine", "fota.journal", "fota.statefile", "fota.http", "fota.esp32slot",
                 "fota.esp32trial", "esp32", "machine")


def loaded_code_kib() -> float:
    """Heap taken by the agent's code (and the names it interns) once loaded as .mpy,
    before any data: the part of agent_min_heap_kib no amount of care in the code's
    data handling can remove."""
    from fota_host.sim import mprun

    script = ("import gc\ngc.collect()\nbase = gc.mem_alloc()\n"
              f"for m in {AGENT_MODULES!r}:\n    __import__(m)\n"
              "gc.collect()\nprint(gc.mem_alloc() - base)\n")
    proc = mprun.run(["-c", script], heap="256K")
    if proc.returncode != 0:
        raise RuntimeError(f"loading the agent's modules failed: {proc.stderr[-300:]}")
    return round(int(proc.stdout.split()[-1]) / 1024, 1)


def _min_heap(root: Path, port: int, srv: ImageServer, info: dict, name: str = "img.bin",
              config: dict | None = None, flash_setup=None) -> int | None:
    """Binary search of the smallest heap (KiB) that upgrades, then the window rule."""
    def holds(h: int) -> bool:
        return _upgrade_ok(root, port, srv, info, f"{h}K", config=config, name=name,
                           flash_setup=flash_setup)

    low, high = 24, 160            # high must pass; binary search the boundary
    if not holds(high):
        return None
    while high - low > 1:
        mid = (low + high) // 2
        ok = holds(mid)
        print(f"  agent heap ({name}) {mid}K: {'ok' if ok else 'fails'}", file=sys.stderr)
        if ok:
            high = mid
        else:
            low = mid
    # Fragmentation makes the boundary ragged (a size can fail just above one that
    # passes): the figure is the smallest size from which the next WINDOW sizes
    # pass as well, and which passes twice more (fragmentation differs run to run).
    while True:
        bad = next((h for h in range(high + 1, high + WINDOW) if not holds(h)), None)
        if bad is None and all(holds(high) for _ in range(2)):
            return high
        high = (bad or high) + 1
        print(f"  agent heap: fails at {bad or high - 1}K, trying from {high}K",
              file=sys.stderr)


def run() -> dict:
    """agent_min_heap_kib (plain image), agent_signed_min_heap_kib (the same image signed,
    the device trusting the key: RSA-3072 after the download) and delta_agent_min_heap_kib
    (a delta from the running image to a new one of the same size)."""
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(mosquitto).exists():
        print("  agent bench skipped: mosquitto is not installed", file=sys.stderr)
        return {"agent_min_heap_kib": None}
    from fota_host.images import delta, esp_image, signing

    root = Path(tempfile.mkdtemp(prefix="fota-bench-agent-"))
    port = _free_port()
    broker = subprocess.Popen([mosquitto, "-p", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    data = images.sim_image("esp32", "2.0.0", SIZE)
    key = signing.generate_key()
    signed = signing.sign(data, key)
    base = esp_image.build_sim_image("1.0.0", SIZE)
    target = esp_image.build_sim_image("2.0.0", None, payload=base[300:-64] + b"app" * 4000)
    patch = delta.delta(base, target)
    files = {"img.bin": data, "signed.bin": signed, "delta.fotz": patch}
    for name, blob in files.items():
        (root / name).write_bytes(blob)

    def on_base(flash: Path) -> None:
        with open(flash / "ota_0", "r+b") as f:
            f.write(base)

    out: dict = {}
    try:
        with ImageServer(root) as srv:
            out["agent_min_heap_kib"] = _min_heap(root, port, srv, images.digests(data))
            out["agent_loaded_code_kib"] = loaded_code_kib()
            out["agent_signed_min_heap_kib"] = _min_heap(
                root, port, srv, images.digests(signed), "signed.bin",
                {"trusted_keys": [signing.key_digest(key)]})
            out["delta_agent_min_heap_kib"] = _min_heap(
                root, port, srv, images.digests(patch), "delta.fotz", None, on_base)
            return out
    finally:
        broker.terminate()
        broker.wait()


if __name__ == "__main__":
    print(json.dumps(run()))
