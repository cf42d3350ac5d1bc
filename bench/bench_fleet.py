"""Fleet bench: 100 simulated devices upgraded with a 1.5 MiB image, against 100 plain downloads.

- fleet_100_seconds: wall time from `task start` until the platform reports every sub-task
  succeeded (notice, download into the simulated flash, MD5 and SHA-256, read-back, reboot,
  health check, the new image's inform), 100 simulated ESP32s on the MicroPython unix port.
- fleet_raw_download_seconds: wall time of 100 concurrent plain downloads of the same file
  from the same file server (one `curl --parallel`, valid tokens), best of two, same run.
- fleet_ratio_vs_raw_downloads = fleet_100_seconds / fleet_raw_download_seconds (goal <= 2.0).
- fleet_floor_seconds: 100 concurrent MicroPython processes that start, GET the image and
  MD5 it, nothing else (bench/floor_get.py): the least any fleet of simulated devices on
  this machine can cost; fleet_floor_ratio_vs_raw_downloads shows how far that floor
  already is from curl, and fleet_ratio_vs_floor what the whole loop costs over it.
- fleet_device_code_download_seconds: 100 concurrent updates by the device code alone
  (`fota_sim update`: download, digests, flash write, read-back; no MQTT, no reboot), and
  fleet_ratio_vs_device_code_downloads: what the whole loop costs over that floor.
- fleet_device_uss_mib / fleet_device_rss_mib: memory of one simulated device's process
  (average over the fleet while it downloads); fleet_supervisor_mib_per_device: the
  supervising Python process (threads, logs) shared out per device.

Env: FLEET_BENCH_N (100), FLEET_BENCH_BROKER (embedded | mosquitto; default embedded, the
broker `make demo` uses), FLEET_BENCH_PUSH_RATE (notices a minute, default 60000).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

N = int(os.environ.get("FLEET_BENCH_N", "100"))
BROKER = os.environ.get("FLEET_BENCH_BROKER", "embedded")
PUSH_RATE = int(os.environ.get("FLEET_BENCH_PUSH_RATE", "60000"))
IMAGE_SIZE = 1536 * 1024
DEVICE_CONFIG = {"health_deadline_s": 60, "progress_step": 10, "progress_interval_s": 5,
                 "broker": {"keepalive": 60, "timeout_s": 10},
                 "download": {"timeout_s": 30}}


def _log(msg: str) -> None:
    print(f"  fleet: {msg}", file=sys.stderr, flush=True)


def _tokens(db_path: Path, task_id: int, n: int, timeout: float = 60) -> list[tuple[str, str]]:
    deadline = time.monotonic() + timeout
    db = sqlite3.connect(str(db_path))
    try:
        while True:
            rows = db.execute("SELECT device, token FROM subtasks WHERE task_id=? AND token"
                              " IS NOT NULL", (task_id,)).fetchall()
            if len(rows) >= n or time.monotonic() > deadline:
                return rows
            time.sleep(0.1)
    finally:
        db.close()


def _raw_downloads(work: Path, urls: list[str]) -> float:
    """Wall time of len(urls) concurrent GETs of the whole file."""
    if shutil.which("curl"):
        cfg = work / "curl.cfg"
        cfg.write_text("".join(f'url = "{u}"\noutput = "/dev/null"\n' for u in urls))
        t0 = time.monotonic()
        subprocess.run(["curl", "--parallel", "--parallel-immediate", "--parallel-max",
                        str(len(urls)), "--fail", "--silent", "--show-error",
                        "--no-progress-meter", "-K", str(cfg)], check=True,
                       stdout=subprocess.DEVNULL)
        return time.monotonic() - t0

    def get(u: str) -> int:
        with urllib.request.urlopen(u, timeout=60) as r:
            n = 0
            while chunk := r.read(1 << 16):
                n += len(chunk)
            return n

    t0 = time.monotonic()
    with ThreadPoolExecutor(len(urls)) as pool:
        list(pool.map(get, urls))
    return time.monotonic() - t0


def _mp_downloads(work: Path, urls: list[str], pkg: dict[str, Any]) -> float:
    """Wall time of len(urls) concurrent updates by the device code alone (`fota_sim update`:
    download, MD5/SHA-256, write, read-back into a simulated flash; no MQTT, no reboot)."""
    from fota_host.sim import update as sim

    flashes = []
    for i in range(len(urls)):
        flash = work / "mp" / f"f{i:03d}"
        sim.prepare(flash, "esp32", "1.0.1")
        flashes.append(flash)
    wall = _concurrently("device-code downloads", [
        (["-m", "fota_sim", "update", "esp32", url, pkg["md5"], str(pkg["size"]),
          pkg["sha256"], "--task", "1"], {"heap": "96K", "flash": flash, "cwd": flash})
        for url, flash in zip(urls, flashes, strict=True)])
    shutil.rmtree(work / "mp", ignore_errors=True)
    return wall


def _concurrently(what: str, runs: list[tuple[list[str], dict[str, Any]]]) -> float:
    """Start every MicroPython run at once; the wall time until the last one ends."""
    from fota_host.sim import mprun

    t0 = time.monotonic()
    procs = [mprun.popen(args, build=False, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, **kw) for args, kw in runs]
    outs = [p.communicate()[0] for p in procs]
    wall = time.monotonic() - t0
    bad = [o for p, o in zip(procs, outs, strict=True) if p.returncode != 0]
    if bad:
        raise RuntimeError(f"{len(bad)} {what} failed: {bad[0][-300:]!r}")
    return wall


def _floor_downloads(urls: list[str], size: int) -> float:
    """Wall time of len(urls) concurrent MicroPython processes that only start, GET the
    image and MD5 it (bench/floor_get.py): the least any fleet of simulated devices costs."""
    script = str(Path(__file__).resolve().parent / "floor_get.py")
    runs = []
    for u in urls:
        p = urllib.parse.urlsplit(u)
        runs.append(([script, p.hostname or "127.0.0.1", str(p.port), f"{p.path}?{p.query}",
                      str(size)], {}))
    return _concurrently("floor downloads", runs)


def run() -> dict[str, Any]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from fota_host.images import synthetic as images
    from fota_host.platform.process import start_platform
    from fota_host.sim.fleet import Fleet

    work = Path(tempfile.mkdtemp(prefix="fota-fleet-bench-"))
    mosquitto = None
    broker = None
    if BROKER == "mosquitto":
        from helpers import Mosquitto

        (work / "mq").mkdir()
        mosquitto = Mosquitto(work / "mq").start()
        broker = mosquitto.url
    platform = start_platform(work / "data", broker=broker, push_rate=PUSH_RATE,
                              device_timeout=600, token_ttl=3600)
    fleet = None
    figures: dict[str, Any] = {}
    try:
        api = platform.client()
        image = work / "app-2.0.0.bin"
        image.write_bytes(images.sim_image("esp32", "2.0.0", IMAGE_SIZE))
        pkg = api.create_package(file=str(image), version="2.0.0", sign="sha256")

        # plain downloads: tokens for N devices that never connect
        raw = api.create_task(package=pkg["id"], name="raw downloads")
        api.add_devices(raw["id"], [f"raw-{i:03d}" for i in range(N)])
        api.start_task(raw["id"])
        rows = _tokens(work / "data" / "platform.db", raw["id"], N)
        urls = [f"{platform.file_base}?" + urllib.parse.urlencode(
            {"fileId": pkg["id"], "taskId": raw["id"], "deviceId": d, "accessToken": t})
            for d, t in rows]
        raw_s = _raw_downloads(work, urls)
        _log(f"{N} plain downloads: {raw_s:.3f}s")
        floor_s = _floor_downloads(urls, pkg["size"])
        _log(f"{N} MicroPython processes that only GET and MD5 the image: {floor_s:.2f}s")
        mp_s = _mp_downloads(work, urls, pkg)
        _log(f"{N} downloads by the device code alone (no MQTT, no reboot): {mp_s:.2f}s")

        _log(f"starting {N} simulated ESP32s ({BROKER} broker) ...")
        fleet = Fleet(work / "fleet", N, platform.broker, ("esp32",), "1.0.1",
                      prefix_id="bench-", config=DEVICE_CONFIG).create()
        fleet.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if len({d["id"] for d in api.list_devices()} & set(fleet.ids)) == N:
                break
            time.sleep(0.2)
        else:
            raise RuntimeError("the fleet did not come online in 120 s")
        idle = fleet.memory()
        task = api.create_task(package=pkg["id"], name="fleet")
        api.add_devices(task["id"], fleet.ids)
        peak: dict[str, Any] = {}
        done = threading.Event()

        def sample() -> None:  # memory while the devices download
            while not done.wait(0.5):
                m = fleet.memory()
                if m["measured"] and m["micropython_uss_mib"] > peak.get(
                        "micropython_uss_mib", 0):
                    peak.update(m)

        sampler = threading.Thread(target=sample, daemon=True)
        t0 = time.monotonic()
        api.start_task(task["id"])
        sampler.start()
        states: dict[str, int] = {}
        while time.monotonic() - t0 < 600:
            t = api.get_task(task["id"])
            states = {}
            for d in t["devices"]:
                states[d["state"]] = states.get(d["state"], 0) + 1
            if t["state"] == "finished":
                break
            time.sleep(0.1)
        fleet_s = time.monotonic() - t0
        done.set()
        sampler.join()
        _log(f"fleet of {N}: {fleet_s:.2f}s {states}")
        raw_s = min(raw_s, _raw_downloads(work, urls))  # best of two plain runs
        _log(f"plain downloads, best of two: {raw_s:.3f}s")
        api.cancel(raw["id"], None)
        if states.get("succeeded") != N:
            raise RuntimeError(f"not every device succeeded: {states}")
        mem = peak or idle
        figures.update({
            "fleet_100_seconds" if N == 100 else f"fleet_{N}_seconds": round(fleet_s, 2),
            "fleet_raw_download_seconds": round(raw_s, 3),
            "fleet_ratio_vs_raw_downloads": round(fleet_s / raw_s, 2),
            "fleet_floor_seconds": round(floor_s, 2),
            "fleet_floor_ratio_vs_raw_downloads": round(floor_s / raw_s, 2),
            "fleet_ratio_vs_floor": round(fleet_s / floor_s, 2),
            "fleet_device_code_download_seconds": round(mp_s, 2),
            "fleet_ratio_vs_device_code_downloads": round(fleet_s / mp_s, 2),
            "fleet_device_uss_mib": mem["micropython_uss_mib"],
            "fleet_device_rss_mib": mem["micropython_rss_mib"],
            "fleet_device_idle_uss_mib": idle["micropython_uss_mib"],
            "fleet_supervisor_mib_per_device": mem["supervisor_rss_mib_per_device"],
            "fleet_bench_broker": BROKER,
        })
    finally:
        if fleet is not None:
            fleet.stop()
        platform.stop()
        if mosquitto:
            mosquitto.stop()
        shutil.rmtree(work, ignore_errors=True)
    return figures


if __name__ == "__main__":
    import json

    print(json.dumps(run()))
