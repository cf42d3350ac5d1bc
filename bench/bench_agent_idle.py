"""agent_idle_heap_kib: the heap in use (after gc.collect()) while the agent is connected
to its broker and idle, waiting for a notice, deployed as .mpy (64-bit unix port).
agent_idle_after_update_kib: the same after a failed update (the modules an update
loads must be released again). agent_tls_idle_heap_kib: idle with MQTT over TLS.
agent_tls_min_heap_kib: the smallest heap in which the agent upgrades with MQTTS and an
HTTPS download, both verified against the project's dev CA; agent_tls_close_min_heap_kib:
the same with broker.tls_during_download "close" (one TLS session at a time).

The device runs the simulated board's own main (`fota_sim agent`) with a probe in place
of the main loop: after every poll it checks whether the agent is idle (connected,
nothing to report, no notice, no task) and prints the heap in use when it becomes so.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from fota_host.sim import mprun
from fota_host.sim.device import SimDevice

sys.path.insert(0, str(Path(__file__).parent))
from heapsearch import smallest_heap, upgrade_ok  # noqa: E402

# The probe: the board's main loop with a heap reading at each busy -> idle change.
PROBE = """import gc
import fota.agent as fa
was = 0
def loop(agent, step=None, period_ms=20):
    global was
    from time import sleep_ms
    while 1:
        agent.poll()
        now = agent.link.connected and not (agent.online or agent.reports or agent.notices)
        if now and not was:
            gc.collect()
            print("IDLE", gc.mem_alloc(), gc.mem_free())
        was = now
        sleep_ms(period_ms)
def release(f=fa.release):
    global was
    f()
    was = 0
fa.loop = loop
fa.release = release
del fa
import sim_agent
sim_agent.main()
"""


class ProbeDevice(SimDevice):
    """A simulated board whose main loop reports its heap whenever the agent goes idle."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        (self.flash / "idle_probe.py").write_text(PROBE)
        self.readings: list[int] = []
        self._lines = threading.Condition()

    def boot_once(self) -> int | None:
        from fota_host.sim import flash as simflash

        simflash.boot(self.flash, full_status=False)
        self.boots += 1
        with self._power:
            if self.stopping.is_set():
                return None
            self.proc = proc = mprun.popen(
                ["idle_probe.py", self.device_id], heap=self.heap, flash=self.flash,
                cwd=self.flash, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                start_new_session=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            if self.log:
                self.log.write(line)
                self.log.flush()
            if line.startswith("IDLE "):
                with self._lines:
                    self.readings.append(int(line.split()[1]))
                    self._lines.notify_all()
        return proc.wait()

    def reading(self, n: int, timeout: float = 60) -> int:
        """The n-th idle reading (bytes in use), 1-based, waiting for it."""
        with self._lines:
            if not self._lines.wait_for(lambda: len(self.readings) >= n, timeout):
                raise TimeoutError(f"no idle reading #{n} in {timeout} s (have {self.readings})")
            return self.readings[n - 1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def idle_readings(root: Path, broker_url: str, notice: dict | None = None,
                  config: dict | None = None, files: dict[str, Path] | None = None,
                  heap: str = "256K", publish_port: int | None = None) -> list[int]:
    """Heap in use when idle; with `notice`, once before it is sent and once after the
    update it starts has ended (it must end without a reboot: a failing one)."""
    import paho.mqtt.client as paho

    shutil.rmtree(root / "idle", ignore_errors=True)
    dev = ProbeDevice(root / "idle", "esp32", "idle", broker_url, version="1.0.0",
                      heap=heap, config={"health_deadline_s": 10, **(config or {})},
                      log=open(root / "idle.log", "w"))  # noqa: SIM115
    for name, src in (files or {}).items():
        shutil.copy(src, dev.flash / name)
    dev.start()
    try:
        out = [dev.reading(1)]
        if notice is None:
            return out
        peer = paho.Client(paho.CallbackAPIVersion.VERSION2)
        peer.connect("127.0.0.1", publish_port or 1883)
        peer.loop_start()
        try:
            peer.publish("devices/idle/ota/upgrade", json.dumps(notice), qos=1)
            out.append(dev.reading(2, timeout=60))
        finally:
            peer.loop_stop()
            peer.disconnect()
        return out
    finally:
        dev.stop()


def _kib(n: int) -> float:
    return round(n / 1024, 1)


def run() -> dict:
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(mosquitto).exists():
        print("  agent idle bench skipped: mosquitto is not installed", file=sys.stderr)
        return {"agent_idle_heap_kib": None}
    from fota_host.boards import certs
    from fota_host.images import synthetic as images
    from fota_host.sim.imageserver import ImageServer

    root = Path(tempfile.mkdtemp(prefix="fota-bench-idle-"))
    pki = root / "pki"
    ca = certs.make_ca(pki)
    server = certs.issue_server(ca, pki, ["localhost", "127.0.0.1"])
    port, tls_port = _free_port(), _free_port()
    conf = root / "mosquitto.conf"
    # As root, mosquitto drops to its own user, who can't read the certificates here.
    user = "user root\n" if os.geteuid() == 0 else ""
    conf.write_text(f"{user}listener {port} 127.0.0.1\nallow_anonymous true\n"
                    f"listener {tls_port} 127.0.0.1\ncafile {ca.cert}\n"
                    f"certfile {server.cert}\nkeyfile {server.key}\n")
    broker = subprocess.Popen([mosquitto, "-c", str(conf)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    www = root / "www"
    www.mkdir()
    img = images.sim_image("esp32", "2.0.0", 300_000)
    (www / "v2.bin").write_bytes(img)
    info = images.digests(img)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(server.cert, server.key)
    out: dict = {}
    try:
        with ImageServer(www) as srv:
            # A failing update: the whole image comes down, then its MD5 is wrong.
            bad = {"taskId": 7, "payload": {"size": info["size"], "version": "2.0.0",
                                            "url": srv.notice_url("v2.bin"), "md5": "0" * 32,
                                            "token": "t", "module": "MCU"}}
            before, after = idle_readings(root, f"mqtt://127.0.0.1:{port}", bad,
                                          publish_port=port)
            out["agent_idle_heap_kib"] = _kib(before)
            out["agent_idle_after_update_kib"] = _kib(after)
        tls_cfg = {"broker": {"ca": "ca.pem"}, "download": {"ca": "ca.pem"}}
        (tls_idle,) = idle_readings(root, f"mqtts://localhost:{tls_port}", None, tls_cfg,
                                    {"ca.pem": ca.cert})
        out["agent_tls_idle_heap_kib"] = _kib(tls_idle)
        with ImageServer(www, tls=ctx) as srv:
            out["agent_tls_min_heap_kib"] = tls_min_heap(root, port, tls_port, srv, info,
                                                         ca.cert)
            # One TLS session at a time: MQTT closed for the download.
            out["agent_tls_close_min_heap_kib"] = tls_min_heap(
                root, port, tls_port, srv, info, ca.cert, during="close")
        return out
    finally:
        broker.terminate()
        broker.wait()


def tls_min_heap(root: Path, port: int, tls_port: int, srv, info: dict, ca: Path,
                 window: int = 5, during: str = "keep") -> int | None:
    """agent_tls_min_heap_kib with bench_agent's method (heapsearch: binary search, then
    the next `window` sizes above the figure must pass too, and the figure twice more);
    `during`: broker.tls_during_download."""
    url = f"https://localhost:{srv.port}/file/upgrade/v2.bin/3"
    cfg = {"broker": {"ca": "ca.pem", "tls_during_download": during},
           "download": {"ca": "ca.pem"}}

    def holds(h: int) -> bool:
        return upgrade_ok(root, port, f"mqtts://localhost:{tls_port}", url, info, f"{h}K",
                          cfg, {"ca.pem": ca}, timeout=90, confirm_s=15, dev_id=f"t{h}k")

    return smallest_heap(holds, 48, 320, window, "agent TLS heap")


if __name__ == "__main__":
    print(json.dumps(run()))
