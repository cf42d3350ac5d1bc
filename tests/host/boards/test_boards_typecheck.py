"""API conformance: the device code type-checks against the official port stubs, and the
check really fails on a call a port does not have."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from fota_host import paths
from fota_host.boards import typecheck


@pytest.mark.parametrize("port", ["esp32", "rp2", "esp32s3", "esp32c3", "esp32c6", "pico2_w"])
def test_device_code_conforms_to_the_port(port: str) -> None:
    result = typecheck.check(port)
    assert result.ok, "\n".join(typecheck.format_diagnostics(result))
    assert result.errors == 0


def test_each_board_is_checked_against_its_own_port() -> None:
    fw = paths.firmware_dir()
    esp = {Path(f).relative_to(fw).as_posix() for f in typecheck.files_for("esp32")}
    rp2 = {Path(f).relative_to(fw).as_posix() for f in typecheck.files_for("rp2")}
    shared = {"fota/engine.py", "fota/http.py", "fota/mqtt.py", "fota/agent.py", "fota/board.py",
              "fota/journal.py", "fota/protocol.py", "fota/config.py", "fota/tls.py"}
    assert shared <= esp and shared <= rp2
    assert {"fota/esp32slot.py", "fota/esp32trial.py", "boards/esp32/main.py"} <= esp
    assert not {"fota/esp32slot.py", "fota/esp32trial.py", "boards/esp32/main.py"} & rp2
    assert {"fota/fileslot.py", "boards/pico_w/main.py"} <= rp2
    assert "fota/fileslot.py" not in esp
    assert not any(f.startswith("sim/") for f in esp | rp2)


def _check_snippet(tmp_path: Path, port: str, code: str) -> typecheck.Result:
    src = tmp_path / "probe.py"
    src.write_text(code)
    return typecheck.check(port, [src], workdir=tmp_path / "cfg")


def test_a_call_the_port_does_not_have_fails(tmp_path: Path) -> None:
    bad = _check_snippet(tmp_path, "esp32",
                         "import esp32\nesp32.Partition.no_such_method()\n")
    assert not bad.ok
    assert any("no_such_method" in d["message"] for d in bad.diagnostics)
    good = _check_snippet(tmp_path, "esp32",
                          "import esp32\nesp32.Partition.mark_app_valid_cancel_rollback()\n")
    assert good.ok, good.diagnostics


def test_a_module_of_another_port_fails(tmp_path: Path) -> None:
    # esp32 does not exist on the Pico W, rp2 does not exist on the ESP32.
    assert not _check_snippet(tmp_path, "rp2", "import esp32\n").ok
    assert not _check_snippet(tmp_path, "esp32", "import rp2\nrp2.Flash()\n").ok
    assert _check_snippet(tmp_path, "rp2", "import rp2\nrp2.Flash()\n").ok


def test_each_board_has_its_own_pinned_official_stubs() -> None:
    pins = typecheck.pins()
    assert set(typecheck.TARGETS) == {"esp32", "rp2", "esp32s3", "esp32c3", "esp32c6",
                                      "pico2_w"}
    for target, (_port, pkg) in typecheck.TARGETS.items():
        assert pins[pkg].startswith("1.29."), (target, pkg)
    assert typecheck.TARGETS["esp32s3"] == ("esp32", "micropython-esp32-esp32-generic-s3-stubs")
    assert typecheck.TARGETS["pico2_w"] == ("rp2", "micropython-rp2-rpi-pico2-w-stubs")
    # A newer board checks its family's files: the S3 the ESP32's, the Pico 2 W the Pico W's.
    assert typecheck.files_for("esp32s3") == typecheck.files_for("esp32")
    assert typecheck.files_for("pico2_w") == typecheck.files_for("rp2")


def test_fota_typecheck_command_exit_status(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "fota_host", "typecheck", "--port", "esp32c3",
                           "--port", "rp2"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "esp32c3:" in proc.stdout and "rp2:" in proc.stdout and " 0 errors" in proc.stdout
    assert "esp32:" not in proc.stdout
