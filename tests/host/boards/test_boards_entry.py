"""The boards' main.py files, run as they are on a board: on the MicroPython unix port
with the compiled fota package and the hardware stand-ins (firmware/sim) on the path."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from fota_host import paths
from fota_host.sim import mprun
from helpers import Output

PICO_MAIN = paths.firmware_dir() / "boards" / "pico_w" / "main.py"
ESP32_MAIN = paths.firmware_dir() / "boards" / "esp32" / "main.py"

# Steps until the pointer says the slot is confirmed, then stop the "board".
APP_CONFIRMS = """
n = 0
def step():
    global n
    n += 1
    import json
    with open("fota_boot.json") as f:
        if json.load(f).get("confirmed"):
            print("app: confirmed after", n, "steps")
            raise SystemExit(0)
def healthy():
    return True
"""

APP_STEPS = """
n = 0
def step():
    global n
    n += 1
    print("app step", n)
    if n == 3:
        raise SystemExit(7)
"""


def board_dir(tmp_path: Path, broker_port: int, slots: dict[str, str],
              pointer: dict | None = None) -> Path:
    root = tmp_path / "board"
    root.mkdir()
    for slot, app in slots.items():
        (root / "slots" / slot).mkdir(parents=True)
        (root / "slots" / slot / "app.py").write_text(app)
        (root / "slots" / slot / "manifest.json").write_text(json.dumps({"version": slot}))
    (root / "fota_config.json").write_text(json.dumps({
        "device_id": "pico-1", "broker": {"host": "127.0.0.1", "port": broker_port},
        "health_deadline_s": 6, "max_trials": 3}))
    if pointer:
        (root / "fota_boot.json").write_text(json.dumps(pointer))
    return root


def run_main(main: Path, cwd: Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return mprun.run([str(main)], cwd=cwd, timeout=timeout)


def test_pico_w_launcher_runs_the_active_slots_app(tmp_path: Path) -> None:
    root = board_dir(tmp_path, 9, {"a": APP_STEPS})       # no broker: the agent retries
    proc = run_main(PICO_MAIN, root)
    assert proc.returncode == 7, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "fota: booting slot a (version a): confirmed"   # which slot, and why
    app = [x for x in lines if not x.startswith("fota:")]             # (the agent's lines)
    assert app[:3] == ["app step 1", "app step 2", "app step 3"]


def test_pico_w_new_slot_is_confirmed_when_its_app_is_healthy(tmp_path: Path,
                                                               mosquitto) -> None:
    root = board_dir(tmp_path, mosquitto.port, {"a": APP_STEPS, "b": APP_CONFIRMS},
                     {"active": "b", "previous": "a", "confirmed": False, "trial": 0,
                      "task": 42})
    proc = run_main(PICO_MAIN, root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "app: confirmed" in proc.stdout
    pointer = json.loads((root / "fota_boot.json").read_text())
    assert pointer["active"] == "b" and pointer["confirmed"] is True


def test_pico_w_broken_app_still_runs_the_agent_and_is_never_confirmed(
        tmp_path: Path, mosquitto) -> None:
    broken = "raise RuntimeError('app bug')\n"
    root = board_dir(tmp_path, mosquitto.port, {"a": APP_STEPS, "b": broken},
                     {"active": "b", "previous": "a", "confirmed": False, "trial": 0,
                      "task": 42})
    proc = run_main(PICO_MAIN, root)
    # The agent ran (connected, informed), then the health check failed at the deadline
    # and it hard-reset the board (exit status 3 from the machine stand-in).
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "app bug" in proc.stdout + proc.stderr
    assert "application health check failed" in proc.stdout
    pointer = json.loads((root / "fota_boot.json").read_text())
    assert pointer["confirmed"] is False
    assert pointer["reason"] == "application health check failed"


def test_pico_w_without_any_app_runs_the_agent(tmp_path: Path) -> None:
    root = board_dir(tmp_path, 9, {})
    dev = mprun.popen([str(PICO_MAIN)], cwd=root, stdout=subprocess.PIPE,
                      stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        assert dev.poll() is None             # still polling: OTA can install an app
    finally:
        dev.kill()
        out, err = dev.communicate()
    assert "Traceback" not in out + err


@pytest.mark.parametrize("app, code, expect", [
    (APP_STEPS, 7, "app step 3"),
    ("import no_such_module_here\n", None, "no_such_module_here"),
])
def test_esp32_main_runs_the_app_beside_the_agent(tmp_path: Path, app: str, code, expect) -> None:
    """ESP32 flash simulated by the esp32 stand-in; a broken app does not stop the agent."""
    root = tmp_path / "esp"
    root.mkdir()
    (root / "app.py").write_text(app)
    (root / "fota_config.json").write_text(json.dumps(
        {"device_id": "esp-1", "broker": {"host": "127.0.0.1", "port": 9}}))
    from fota_host.sim import flash as simflash

    simflash.init_flash(root, "esp32")
    simflash.seed(root, "1.0.0")
    # extra_path: the board's "" entry of sys.path (a script's own folder comes first here)
    dev = mprun.popen([str(ESP32_MAIN)], cwd=root, flash=root, extra_path=[root],
                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = Output(dev)
    try:
        said = out.wait(expect)
        if code is None:
            time.sleep(1)
        rc = dev.wait(timeout=30) if code is not None else dev.poll()  # None: still running
    finally:
        if dev.poll() is None:
            dev.kill()
        dev.wait()
    assert said, out.text()
    assert rc == code, out.text()
