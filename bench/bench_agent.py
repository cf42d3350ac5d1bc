"""agent_min_heap_kib: the smallest heap in which the whole agent (MQTT, download,
engine, JSON) completes an upgrade through reboot and confirm, deployed as .mpy, and so
do the next few sizes above it (fragmentation makes the pass/fail boundary ragged)."""

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
                timeout: float = 60) -> bool:
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
    dev = SimDevice(root / dev_id, "esp32", dev_id, f"mqtt://127.0.0.1:{port}",
                    version="1.0.0", heap=heap, config={"health_deadline_s": 10},
                    log=open(root / f"{dev_id}.log", "w"))  # noqa: SIM115
    dev.start()
    try:
        time.sleep(1.0)
        notice = {"taskId": 9, "payload": {
            "size": SIZE, "version": "2.0.0", "url": srv.notice_url("img.bin"),
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


def run() -> dict:
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(mosquitto).exists():
        print("  agent bench skipped: mosquitto is not installed", file=sys.stderr)
        return {"agent_min_heap_kib": None}
    root = Path(tempfile.mkdtemp(prefix="fota-bench-agent-"))
    port = _free_port()
    broker = subprocess.Popen([mosquitto, "-p", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    data = images.sim_image("esp32", "2.0.0", SIZE)
    (root / "img.bin").write_bytes(data)
    info = images.digests(data)
    try:
        with ImageServer(root) as srv:
            low, high = 24, 128            # high must pass; binary search the boundary
            if not _upgrade_ok(root, port, srv, info, f"{high}K"):
                return {"agent_min_heap_kib": None}
            while high - low > 1:
                mid = (low + high) // 2
                ok = _upgrade_ok(root, port, srv, info, f"{mid}K")
                print(f"  agent heap {mid}K: {'ok' if ok else 'fails'}", file=sys.stderr)
                if ok:
                    high = mid
                else:
                    low = mid
            # Fragmentation makes the boundary ragged (a size can fail just above one that
            # passes): the figure is the smallest size from which the next WINDOW sizes
            # pass as well, and which passes twice more (fragmentation differs run to run).
            def holds(h: int) -> bool:
                return _upgrade_ok(root, port, srv, info, f"{h}K")

            while True:
                bad = next((h for h in range(high + 1, high + WINDOW) if not holds(h)), None)
                if bad is None and all(holds(high) for _ in range(2)):
                    return {"agent_min_heap_kib": high,
                            "agent_loaded_code_kib": loaded_code_kib()}
                high = (bad or high) + 1
                print(f"  agent heap: fails at {bad or high - 1}K, trying from {high}K",
                      file=sys.stderr)
    finally:
        broker.terminate()
        broker.wait()


if __name__ == "__main__":
    print(json.dumps(run()))
