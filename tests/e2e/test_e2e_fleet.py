"""`fota sim fleet` as a user runs it: N devices, own flash folders and logs, fault flags,
a clean stop on SIGTERM/Ctrl-C, and the memory it costs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
from e2e_world import NEW, OLD, SIZE
from fota_host.images import synthetic as images
from fota_host.platform.process import start_platform
from helpers import free_port


def fleet_cmd(broker: str, data: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "fota_host", "sim", "fleet", "--broker",
                             broker, "--data", str(data), "--version", OLD, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def device_processes(data: Path) -> list[psutil.Process]:
    """micropython processes whose filesystem is a flash folder under `data`."""
    out = []
    for p in psutil.process_iter(["cmdline", "cwd"]):
        try:
            if "fota_sim" in " ".join(p.info["cmdline"] or []) and \
                    str(p.info["cwd"] or "").startswith(str(data)):
                out.append(p)
        except psutil.Error:
            continue
    return out


def wait_online(api, ids, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if set(ids) <= {d["id"] for d in api.list_devices()}:
            return
        time.sleep(0.1)
    raise TimeoutError(f"not online: {ids}")


def stop(proc: subprocess.Popen, sig=signal.SIGTERM) -> dict:
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def test_fleet_runs_n_devices_and_stops_cleanly(tmp_path):
    platform = start_platform(tmp_path / "platform")
    data = tmp_path / "fleet"
    try:
        proc = fleet_cmd(platform.broker, data, "--count", "4", "--prefix-id", "f-")
        ids = ["f-001", "f-002", "f-003", "f-004"]
        wait_online(platform.client(), ids)
        assert len(device_processes(data)) == 4
        result = stop(proc, signal.SIGINT)           # Ctrl-C
    finally:
        platform.stop()
    assert result["devices"] == 4
    assert result["versions"] == {i: OLD for i in ids}
    assert result["memory"]["measured"] == 4
    assert 0 < result["memory"]["micropython_uss_mib"] < 16
    boards = json.loads((data / "fleet.json").read_text())["devices"]
    assert [b["board"] for b in boards] == ["esp32", "pico_w", "esp32", "pico_w"]
    for i in ids:
        assert (data / i / "fota_config.json").is_file()
        assert "[sim] boot 1: running" in (data / "logs" / f"{i}.log").read_text()
    assert device_processes(data) == []              # nothing left running


def test_fleet_fault_flags_during_an_upgrade(tmp_path):
    """Power cuts, a late device, a frozen one, a broker outage and a slow link, all in one
    upgrade."""
    proxy_port = free_port()  # the fleet's proxy binds it; the platform picks its own
    platform = start_platform(tmp_path / "platform", public_url=f"http://127.0.0.1:{proxy_port}",
                              retries=2, retry_backoff=0.5)
    data = tmp_path / "fleet"
    api = platform.client()
    proc = None
    try:
        proc = fleet_cmd(platform.broker, data, "--count", "4", "--prefix-id", "f-",
                         "--health-deadline", "5", "--power-cut", "2", "--offline", "1",
                         "--offline-for", "4", "--mqtt-outage", "3,1", "--seed", "7",
                         "--pause", "1", "--pause-for", "1",
                         "--http-proxy", str(proxy_port), "--http-upstream",
                         platform.api, "--http-rate", "65536",
                         "--config", json.dumps({"broker": {"keepalive": 4, "timeout_s": 2},
                                                 "progress_interval_s": 0.5}))
        fleet = json.loads(_wait_file(data / "fleet.json"))
        by_board: dict[str, list[str]] = {}
        for d in fleet["devices"]:
            by_board.setdefault(d["board"], []).append(d["id"])
        tasks = {}
        for board, ids in by_board.items():
            path = tmp_path / f"{board}.bin"
            path.write_bytes(images.sim_image(board, NEW, SIZE[board]))
            pkg = api.create_package(file=str(path), version=NEW)
            tid = api.create_task(package=pkg["id"], name=board)["id"]
            assert all(r["ok"] for r in api.add_devices(tid, ids))
            api.start_task(tid)
            tasks[tid] = ids
        deadline = time.monotonic() + 60
        while True:
            rows = [r for tid in tasks for r in api.get_task(tid)["devices"]]
            if all(r["state"] == "succeeded" for r in rows):
                break
            assert time.monotonic() < deadline, rows
            assert not any(r["state"] in ("failed", "timed_out") for r in rows), rows
            time.sleep(0.2)
        time.sleep(0.5)
        result = stop(proc)
        proc = None
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        platform.stop()
    assert set(result["versions"].values()) == {NEW}
    events = " | ".join(result["events"])
    assert events.count("power cut mid-download") == 2, events
    assert "offline for 4.0s" in events and "powered on" in events, events
    assert "broker unreachable for 1.0s" in events, events
    assert "frozen for 1.0s" in events, events
    for dev_id, version in result["versions"].items():
        log = (data / "logs" / f"{dev_id}.log").read_text()
        booted = [line.split(" version ")[1].split()[0] for line in log.splitlines()
                  if line.startswith("[sim] boot ")]
        assert set(booted) <= {OLD, NEW} and booted[-1] == version, booted


def _wait_file(path: Path, timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            text = path.read_text()
            json.loads(text)
            return text
        except (OSError, ValueError):
            time.sleep(0.05)
    raise TimeoutError(f"{path} not written")


def test_fleet_refuses_bad_flags(tmp_path):
    for args, message in ((["--boards", "esp8266"], "--boards"),
                          (["--mqtt-outage", "soon"], "--mqtt-outage"),
                          (["--http-proxy", "9"], "--http-upstream"),
                          (["--config", "[1]"], "--config")):
        proc = subprocess.run([sys.executable, "-m", "fota_host", "sim", "fleet", "--count", "1",
                               "--broker", "mqtt://127.0.0.1:1", "--data", str(tmp_path / "x"),
                               *args], capture_output=True, text=True, timeout=30,
                              env={**os.environ})
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr)


def test_stop_while_a_device_reboots_leaves_no_process(tmp_path, monkeypatch):
    """stop() landing between the simulated bootloader and the power-on of the next process
    (a reboot in progress) must not leave an orphaned micropython behind."""
    import threading

    from fota_host.sim import device as simdevice
    from fota_host.sim import flash as simflash

    in_boot, release = threading.Event(), threading.Event()
    real_boot = simflash.boot

    def slow_boot(*args, **kwargs):
        in_boot.set()
        release.wait(10)
        return real_boot(*args, **kwargs)

    monkeypatch.setattr(simdevice.simflash, "boot", slow_boot)
    dev = simdevice.SimDevice(tmp_path / "dev", "esp32", "orphan", "mqtt://127.0.0.1:9",
                              version=OLD)
    thread = dev.start()
    assert in_boot.wait(10)
    stopper = threading.Thread(target=dev.stop)
    stopper.start()
    time.sleep(0.2)              # stop() has run (or waits for the power-on to finish)
    release.set()
    stopper.join(10)
    thread.join(10)
    assert not thread.is_alive()
    assert dev.proc is None or dev.proc.poll() is not None
    assert device_processes(tmp_path) == []
