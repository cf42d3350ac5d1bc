"""`fota sim device` and `fota sim fleet` stop on Ctrl-C and SIGTERM, leave no device
process behind even when the supervisor is killed with SIGKILL, and name each device on
its process's command line (#11.7); bad settings are refused before anything is made."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from helpers import wait_for

FOTA = [sys.executable, "-m", "fota_host"]
DEADLINE = 30          # generous: a busy 2-core machine


def device_processes(device_id: str) -> list[psutil.Process]:
    """micropython processes running the agent of `device_id` (named on the command line)."""
    out = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            cmd = p.info["cmdline"] or []
        except psutil.Error:
            continue
        if "fota_sim" in cmd and cmd[-2:] == ["agent", device_id]:
            out.append(p)
    return out


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([*FOTA, "sim", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def sim_device(tmp_path: Path, device_id: str) -> subprocess.Popen:
    # no broker listens on port 1: the device keeps retrying, as a real one would
    return start("device", "--flash", str(tmp_path / device_id), "--id", device_id,
                 "--broker", "mqtt://127.0.0.1:1", "--version", "1.0.0")


def running(device_id: str) -> list[psutil.Process]:
    return wait_for(lambda: device_processes(device_id), timeout=DEADLINE,
                    what=f"the device process of {device_id}")


def handles_signals(proc: subprocess.Popen) -> None:
    """Wait until the supervisor has its signal handlers (SIGTERM, SIGINT, then SIGHUP).
    It installs them before its first device starts (a signal that early is checked by
    test_ctrl_c_while_the_fleet_starts_stops_it_cleanly); here they are waited for."""

    def caught() -> bool:
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
        except OSError:
            return False
        mask = next((int(line.split()[1], 16) for line in status.splitlines()
                     if line.startswith("SigCgt:")), 0)
        return bool(mask >> (signal.SIGHUP - 1) & 1)

    wait_for(caught, timeout=DEADLINE, what="the supervisor's signal handlers")


def gone(device_id: str) -> None:
    wait_for(lambda: not device_processes(device_id), timeout=DEADLINE,
             what=f"no process of {device_id} left")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sim_device_stops_on_a_signal_and_leaves_no_process(tmp_path: Path, sig) -> None:
    device_id = f"stop-{sig.name.lower()}"
    proc = sim_device(tmp_path, device_id)
    try:
        running(device_id)
        handles_signals(proc)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=DEADLINE)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and f"{device_id} stopped" in err
    assert "[sim] boot 1: running" in out
    gone(device_id)


def test_ctrl_c_in_a_terminal_stops_the_device_once(tmp_path: Path) -> None:
    """Ctrl-C reaches the whole foreground process group: the supervisor stops the device
    (which runs in its own group and does not see the terminal's SIGINT) and does not
    reboot it."""
    device_id = "stop-group"
    proc = subprocess.Popen([*FOTA, "sim", "device", "--flash", str(tmp_path / device_id),
                             "--id", device_id, "--broker", "mqtt://127.0.0.1:1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        running(device_id)
        handles_signals(proc)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=DEADLINE)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "Traceback" not in err, err
    assert "rebooting" not in out and out.count("[sim] boot") == 1
    gone(device_id)


def test_sigkill_of_the_supervisor_leaves_no_device_running(tmp_path: Path) -> None:
    proc = start("fleet", "--count", "2", "--broker", "mqtt://127.0.0.1:1",
                 "--data", str(tmp_path / "fleet"), "--prefix-id", "orphan-")
    try:
        for device_id in ("orphan-001", "orphan-002"):
            running(device_id)
        proc.kill()
        proc.wait(DEADLINE)
    finally:
        if proc.poll() is None:
            proc.kill()
    gone("orphan-001")
    gone("orphan-002")


def test_sim_device_killed_with_sigkill_leaves_no_device(tmp_path: Path) -> None:
    proc = sim_device(tmp_path, "orphan-one")
    try:
        running("orphan-one")
        proc.kill()
        proc.wait(DEADLINE)
    finally:
        if proc.poll() is None:
            proc.kill()
    gone("orphan-one")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sim_fleet_stops_on_a_signal(tmp_path: Path, sig) -> None:
    prefix = f"fl{sig.name.lower()}-"
    proc = start("fleet", "--count", "2", "--broker", "mqtt://127.0.0.1:1",
                 "--data", str(tmp_path / "fleet"), "--prefix-id", prefix)
    try:
        running(f"{prefix}001")
        running(f"{prefix}002")
        handles_signals(proc)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=DEADLINE)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "Traceback" not in err, err
    assert f"stopping ({sig.name})" in err
    assert out.strip().splitlines()[-1].startswith('{"devices": 2')
    gone(f"{prefix}001")
    gone(f"{prefix}002")


def test_ctrl_c_while_the_fleet_starts_stops_it_cleanly(tmp_path: Path) -> None:
    """The handlers are in place before the first device starts: Ctrl-C as soon as one
    device runs, while the others are still starting, is the same clean stop (it used to
    meet Python's default SIGINT there: a KeyboardInterrupt traceback)."""
    prefix = "early-"
    proc = start("fleet", "--count", "30", "--broker", "mqtt://127.0.0.1:1",
                 "--data", str(tmp_path / "fleet"), "--prefix-id", prefix)
    try:
        running(f"{prefix}001")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=DEADLINE)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "Traceback" not in err, err
    assert "stopping (SIGINT)" in err
    assert out.strip().splitlines()[-1].startswith('{"devices": 30')
    for n in range(1, 31):
        gone(f"{prefix}{n:03d}")


@pytest.mark.parametrize(("args", "message"), [
    (["--heap", "10"], "--heap 10 is too small"),
    (["--heap", "lots"], "--heap must be a size"),
    (["--broker", "mtqq://127.0.0.1:1883"], "unknown scheme 'mtqq://'"),
    (["--broker", "127.0.0.1:1883"], "mqtt://HOST:PORT"),
    (["--broker", "mqtt://127.0.0.1:port"], "port is not a number"),
])
def test_bad_device_settings_are_refused_and_make_no_flash(tmp_path: Path, args, message):
    base = {"--broker": "mqtt://127.0.0.1:1883"}
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    for command in (["device", "--flash", str(tmp_path / "f"), "--id", "d1"],
                    ["fleet", "--count", "1", "--data", str(tmp_path / "f")]):
        flat = [x for kv in base.items() for x in kv]
        proc = subprocess.run([*FOTA, "sim", *command, *flat], capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert message in proc.stderr and "Traceback" not in proc.stderr
        if "--broker" in args:
            assert base["--broker"] in proc.stderr       # the address the user gave
        assert not (tmp_path / "f").exists()             # no flash folder left behind


@pytest.mark.parametrize(("args", "message"), [
    (["fleet", "--count", "100000000"], "not in the range 1<=x<=1000"),  # filled the disk
    (["fleet", "--count", "1", "--for", "-5"], "'--for': -5.0 is not in the range x>0"),
    (["fleet", "--count", "1", "--http-drop-after", "-1"], "'--http-drop-after'"),
    (["device", "--id", "bad id/#"], "--id: invalid device id 'bad id/#'"),  # ran OTA-less
])
def test_absurd_counts_durations_and_ids_are_refused_at_once(tmp_path: Path, args, message):
    place = ["--data", str(tmp_path / "f")] if args[0] == "fleet" else \
        ["--flash", str(tmp_path / "f")]
    proc = subprocess.run([*FOTA, "sim", *args, *place, "--broker", "mqtt://127.0.0.1:1"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "f").exists()                 # nothing made


def test_sim_update_names_a_mistyped_scheme_and_a_missing_file(tmp_path: Path) -> None:
    md5 = "0" * 32
    for source, message in (("htp://127.0.0.1/v2.bin", "unsupported URL scheme 'htp'"),
                            (str(tmp_path / "nope.bin"), "no such file")):
        proc = subprocess.run([*FOTA, "sim", "update", "--flash", str(tmp_path / "f"), source,
                               "--md5", md5, "--size", "10"], capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 2 and message in proc.stderr and source in proc.stderr
    proc = subprocess.run([*FOTA, "sim", "update", "--flash", str(tmp_path / "f"),
                           "http://127.0.0.1:1/x", "--md5", md5, "--size", "10", "--heap", "10"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--heap 10 is too small" in proc.stderr


def test_fleet_names_a_mistyped_upstream_scheme(tmp_path: Path) -> None:
    proc = subprocess.run([*FOTA, "sim", "fleet", "--count", "1", "--broker",
                           "mqtt://127.0.0.1:1", "--data", str(tmp_path / "f"), "--http-proxy",
                           "9", "--http-upstream", "htp://127.0.0.1:8080"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "unknown scheme 'htp://'" in proc.stderr
    assert "htp://127.0.0.1:8080" in proc.stderr and not (tmp_path / "f").exists()
