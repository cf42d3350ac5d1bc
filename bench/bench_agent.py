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
import time
from pathlib import Path

from fota_host.images import synthetic as images
from fota_host.sim.imageserver import ImageServer

sys.path.insert(0, str(Path(__file__).parent))
from heapsearch import smallest_heap, upgrade_ok  # noqa: E402

SIZE = 1_468_000
WINDOW = 5  # sizes (KiB) above the figure that must pass too


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# What an upgrading ESP32 agent holds as code: the device modules and the simulation's
# stand-ins for the ESP32 port's built-in modules.
AGENT_MODULES = ("umqtt.simple", "fota.mqttcodec", "fota.mqtt", "fota.protocol", "fota.agent",
                 "fota.updater", "fota.engine", "fota.journal", "fota.statefile", "fota.http",
                 "fota.esp32slot", "fota.esp32trial", "esp32", "machine")


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
    """The smallest heap (KiB) that upgrades (heapsearch's window rule)."""
    def holds(h: int) -> bool:
        return upgrade_ok(root, port, f"mqtt://127.0.0.1:{port}", srv.notice_url(name), info,
                          f"{h}K", config=config, flash_setup=flash_setup)

    return smallest_heap(holds, 24, 160, WINDOW, f"agent heap ({name})")


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
