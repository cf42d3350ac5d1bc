"""`fota deploy` / `make deploy`: the mpremote plan, checked without a board, and the
board-side preparation step run on the real MicroPython unix port."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fota_host import paths
from fota_host.boards import deploy
from fota_host.sim import mprun

FOTA = [sys.executable, "-m", "fota_host"]


def write_config(folder: Path, **extra) -> Path:
    cfg = {"device_id": "dev-7", "broker": {"host": "192.168.1.10", "user": "dev-7",
                                            "password": "pw"},
           "wifi": {"ssid": "lab", "password": "x"}, **extra}
    path = folder / "device.json"
    path.write_text(json.dumps(cfg))
    return path


def dry_run(board: str, config: Path, port: str = "/dev/ttyACM0"):
    return subprocess.run([*FOTA, "deploy", "--board", board, "--port", port, "--config",
                           str(config), "--dry-run"], capture_output=True, text=True, timeout=120)


def copied(commands: list[list[str]]) -> dict[str, str]:
    """Device path -> local file, read back from the mpremote `fs cp` commands."""
    out: dict[str, str] = {}
    for cmd in commands:
        parts: list[list[str]] = [[]]
        for arg in cmd[3:]:                 # after `mpremote connect PORT`
            if arg == "+":
                parts.append([])
            else:
                parts[-1].append(arg)
        for args in parts:
            if args[:2] != ["fs", "cp"]:
                continue
            *srcs, dest = args[2:]
            assert dest.startswith(":")
            for src in srcs:
                name = dest[1:] + Path(src).name if dest.endswith("/") else dest[1:]
                out[name] = src
    return out


def test_pico_w_plan_copies_what_the_board_needs(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    p = deploy.plan("pico_w", "/dev/ttyACM0", cfg)
    assert all(c[0].endswith("mpremote") and c[1:3] == ["connect", "/dev/ttyACM0"]
               for c in p.commands)
    files = copied(p.commands)
    assert files == p.files
    assert "lib/fota/fileslot.mpy" in files and "lib/fota/engine.mpy" in files
    assert "lib/fota/esp32slot.mpy" not in files and "lib/fota/esp32trial.mpy" not in files
    assert files["lib/umqtt/simple.mpy"].endswith("umqtt/simple.mpy")   # not in Pico W builds
    assert files["main.py"] == str(paths.firmware_dir() / "boards/pico_w/main.py")
    assert files["boot.py"] == str(paths.firmware_dir() / "boards/pico_w/boot.py")
    assert files["fota_config.json"] == str(cfg.resolve())
    assert not any(f.endswith(".py") for f in files if f.startswith("lib/"))   # only .mpy
    assert all(Path(src).is_file() for src in files.values())
    assert p.commands[-1][-1] == "reset"


def test_esp32_plan_relies_on_the_frozen_umqtt(tmp_path: Path) -> None:
    files = deploy.plan("esp32", "/dev/ttyUSB0", write_config(tmp_path)).files
    assert "lib/fota/esp32slot.mpy" in files and "lib/fota/esp32trial.mpy" in files
    assert "lib/fota/fileslot.mpy" not in files
    assert not any("umqtt" in f for f in files)
    assert files["main.py"].endswith("boards/esp32/main.py")


def test_every_module_the_board_imports_is_deployed(tmp_path: Path) -> None:
    for board, skip in (("esp32", {"fileslot"}), ("pico_w", {"esp32slot", "esp32trial"})):
        files = deploy.plan(board, "/dev/x", write_config(tmp_path)).files
        for src in (paths.firmware_dir() / "fota").glob("*.py"):
            if src.stem not in skip:
                assert f"lib/fota/{src.stem}.mpy" in files, (board, src.stem)


def test_dry_run_prints_the_exact_commands(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    proc = dry_run("pico_w", cfg)
    assert proc.returncode == 0, proc.stderr
    expected = deploy.plan("pico_w", "/dev/ttyACM0", cfg).lines()
    assert proc.stdout == "\n".join(expected) + "\n"
    # each printed command parses back to the argv that would run
    text = proc.stdout
    assert "fs cp" in text and text.rstrip().endswith("reset")


def test_ca_named_by_the_config_is_deployed_under_that_name(tmp_path: Path) -> None:
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    cfg = write_config(tmp_path, broker={"host": "b", "tls": True, "ca": "certs/ca.pem"})
    p = deploy.plan("esp32", "/dev/ttyUSB0", cfg)
    assert p.files["certs/ca.pem"] == str(tmp_path / "certs" / "ca.pem")
    assert copied(p.commands)["certs/ca.pem"] == str(tmp_path / "certs" / "ca.pem")
    assert '"certs"' in p.commands[0][-1]         # the folder is created on the board first


def test_missing_ca_file_is_refused(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, broker={"host": "b", "tls": True, "ca": "ca.pem"})
    proc = dry_run("esp32", cfg)
    assert proc.returncode != 0 and "ca.pem" in proc.stderr and "does not exist" in proc.stderr


@pytest.mark.parametrize("bad, why", [
    ({"broker": {"host": "b"}}, "device_id"),
    ({"device_id": "d", "broker": {"host": "b", "tls": True}}, "broker.tls needs broker.ca"),
    ({"device_id": "d"}, "broker"),
])
def test_bad_config_is_refused_before_touching_the_board(tmp_path: Path, bad, why) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    proc = dry_run("esp32", path)
    assert proc.returncode != 0 and why in proc.stderr


def test_no_board_gives_a_clear_error(tmp_path: Path) -> None:
    proc = subprocess.run([*FOTA, "deploy", "--board", "esp32", "--port", "/dev/ttyNOPE0",
                           "--config", str(write_config(tmp_path))],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "no board at /dev/ttyNOPE0" in proc.stderr


def test_prepare_step_runs_on_micropython(tmp_path: Path) -> None:
    """The `exec` snippet: a stale lib/fota (e.g. .py from mip) is gone, folders exist."""
    (tmp_path / "lib" / "fota" / "sub").mkdir(parents=True)
    (tmp_path / "lib" / "fota" / "engine.py").write_text("stale = True\n")
    (tmp_path / "lib" / "fota" / "sub" / "x.py").write_text("")
    (tmp_path / "lib" / "keep.py").write_text("")
    p = deploy.plan("pico_w", "/dev/x", write_config(tmp_path))
    snippet = p.commands[0][-1]
    assert p.commands[0][3] == "exec"
    (tmp_path / "prep.py").write_text(snippet)
    proc = mprun.run(["prep.py"], cwd=tmp_path, build=False, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "lib" / "fota").is_dir()
    assert list((tmp_path / "lib" / "fota").iterdir()) == []
    assert (tmp_path / "lib" / "umqtt").is_dir()
    assert (tmp_path / "lib" / "keep.py").exists()
    again = mprun.run(["prep.py"], cwd=tmp_path, build=False, timeout=60)   # idempotent
    assert again.returncode == 0, again.stderr
