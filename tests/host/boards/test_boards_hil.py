"""`make hil` / `fota hil`: clear refusals without a board, and the whole orchestration
rehearsed against the real local platform with a simulated ESP32 in place of the board."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fota_host.boards import hil
from fota_host.images import esp_image
from fota_host.platform.process import start_platform

FOTA = [sys.executable, "-m", "fota_host"]


def config(tmp_path: Path, device: str, host: str = "127.0.0.1", port: int = 1883) -> Path:
    path = tmp_path / "device.json"
    path.write_text(json.dumps({"device_id": device, "broker": {"host": host, "port": port}}))
    return path


def test_without_a_board_it_says_so(tmp_path: Path) -> None:
    image = tmp_path / "new.bin"
    image.write_bytes(esp_image.build_sim_image("2.0.0", 8192))
    proc = subprocess.run([*FOTA, "hil", "--board", "esp32", "--port", "/dev/ttyUSB97",
                           "--config", str(config(tmp_path, "d")), "--data", str(tmp_path),
                           "--image", str(image), "--version", "2.0.0"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "no board at /dev/ttyUSB97" in proc.stderr and "docs/boards.md" in proc.stderr


def test_make_hil_without_port_fails_clearly() -> None:
    root = Path(__file__).resolve().parents[3]
    proc = subprocess.run(["make", "-s", "-C", str(root), "hil", "PORT=", "BOARD=esp32",
                           "-o", "setup"],          # -o setup: nothing to install here
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "no board at PORT=''" in proc.stderr


def test_without_a_running_platform_it_says_so(tmp_path: Path) -> None:
    image = tmp_path / "new.bin"
    image.write_bytes(esp_image.build_sim_image("2.0.0", 8192))
    (tmp_path / "data").mkdir()
    with pytest.raises(hil.HilError, match="no platform service runs"):
        # /dev/null stands in for a port that exists
        hil.run("esp32", "/dev/null", config(tmp_path, "d"), tmp_path / "data", image, "2.0.0")


def test_a_refused_image_never_reaches_the_platform(tmp_path: Path) -> None:
    image = tmp_path / "new.bin"
    image.write_bytes(esp_image.build_sim_image("2.0.0", 8192))
    with pytest.raises(hil.HilError, match="never see"):
        hil.run("esp32", "/dev/null", config(tmp_path, "d"), tmp_path, image, "3.0.0")


def test_rehearsal_with_a_simulated_esp32(tmp_path: Path) -> None:
    """The HIL flow end to end, a simulated board standing in for the real one."""
    platform = start_platform(tmp_path / "data")
    device = None
    try:
        broker = urlsplit(platform.broker)
        device = subprocess.Popen(
            [*FOTA, "sim", "device", "--flash", str(tmp_path / "flash"), "--board", "esp32",
             "--id", "hil-1", "--broker", f"mqtt://{broker.hostname}:{broker.port}",
             "--version", "1.0.0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = platform.client()
        deadline = time.monotonic() + 30
        while not any(d["id"] == "hil-1" for d in client.list_devices()):
            assert time.monotonic() < deadline, "the simulated board never informed"
            time.sleep(0.2)
        image = tmp_path / "micropython.bin"
        image.write_bytes(esp_image.build_sim_image("2.0.0", 128 * 1024))
        lines: list[str] = []
        result = hil.run("esp32", "/dev/null",
                         config(tmp_path, "hil-1", broker.hostname or "", broker.port or 0),
                         tmp_path / "data", image, "2.0.0", timeout=90, poll=0.3,
                         echo=lines.append)
        assert result["ok"], (result, lines)
        assert result["state"] == "succeeded" and result["device"] == "hil-1"
        assert any("started" in line for line in lines)
    finally:
        if device:
            device.terminate()
            try:
                device.wait(10)
            except subprocess.TimeoutExpired:
                device.kill()
        platform.stop()
