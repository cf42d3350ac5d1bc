"""The boards people buy today, as simulated boards and as packaging targets: each chip's
id in its images, its OTA slot, its watchdog limit (boards/chips.py, cited there)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fota_host.boards import chips
from fota_host.images import esp32check, esp_image
from fota_host.sim import flash as simflash
from fota_host.sim import update as sim

FOTA = [sys.executable, "-m", "fota_host"]


def test_chip_ids_and_limits_are_the_ports() -> None:
    ids = {b: chips.BOARDS[b].chip_id for b in ("esp32", "esp32s3", "esp32c3", "esp32c6")}
    assert ids == {"esp32": 0, "esp32s3": 9, "esp32c3": 5, "esp32c6": 13}
    assert chips.BOARDS["pico_w"].wdt_max_s == 8.388          # RP2040
    assert chips.BOARDS["pico2_w"].wdt_max_s == 16.777        # RP2350
    assert chips.BOARDS["esp32s3"].ota_slot == 0x270000       # 8 MiB OTA table
    assert {b.flash_block for b in chips.BOARDS.values()} == {4096}
    assert chips.family("esp32c6") == "esp32" and chips.family("pico2_w") == "pico_w"
    with pytest.raises(ValueError, match="unknown board"):
        chips.board("esp8266")


@pytest.mark.parametrize("board", ["esp32", "esp32s3", "esp32c3", "esp32c6"])
def test_simulated_board_has_its_slot_size_and_chip(tmp_path: Path, board: str) -> None:
    flash = tmp_path / "flash"
    st = sim.prepare(flash, board, "1.0.0")
    assert (st["board"], st["model"]) == ("esp32", board)
    assert (flash / "ota_1").stat().st_size == chips.BOARDS[board].ota_slot
    app = esp_image.parse_app_image((flash / "ota_0").read_bytes())
    assert app.chip == board and app.chip_id == chips.BOARDS[board].chip_id


def test_s3_board_refuses_an_image_for_the_classic_esp32(tmp_path: Path, served) -> None:
    flash = tmp_path / "flash"
    sim.prepare(flash, "esp32s3", "1.0.0")
    img = served.add("v2.bin", esp_image.build_sim_image("2.0.0", 64 * 1024))
    report = sim.update(flash, "esp32s3", img["url"], img["md5"], img["size"])
    assert report["step"] == -3
    assert "image for esp32, this board is esp32s3" in report["reason"]
    assert simflash.status(flash)["versions"]["ota_1"] is None


def test_a_flash_folder_keeps_its_board(tmp_path: Path) -> None:
    flash = tmp_path / "flash"
    sim.prepare(flash, "esp32c3", "1.0.0")
    with pytest.raises(simflash.SimError, match="holds a simulated esp32c3"):
        sim.prepare(flash, "esp32c6")


@pytest.mark.parametrize("chip", ["esp32s3", "esp32c3", "esp32c6"])
def test_packaging_per_chip_refuses_the_wrong_one(tmp_path: Path, chip: str) -> None:
    data = esp_image.build_sim_image("v1", 8192, chip=chip)
    assert esp32check.check_image(data, "v1", chip)["chip"] == chip
    with pytest.raises(esp_image.ImageError, match=f"built for {chip}"):
        esp32check.check_image(data, "v1", "esp32")
    other = "esp32c3" if chip != "esp32c3" else "esp32c6"
    with pytest.raises(esp_image.ImageError, match=f"not {other}"):
        esp32check.check_image(data, "v1", other)


def test_sim_init_command_takes_the_new_boards(tmp_path: Path) -> None:
    proc = subprocess.run([*FOTA, "sim", "init", "--flash", str(tmp_path / "f"), "--board",
                           "pico2_w", "--version", "1.0.0"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    st = json.loads(proc.stdout)
    assert (st["board"], st["model"], st["version"]) == ("pico_w", "pico2_w", "1.0.0")


@pytest.mark.parametrize("board,family", [("esp32s3", "esp32"), ("esp32c6", "esp32"),
                                          ("pico2_w", "pico_w")])
def test_deploy_plan_for_a_new_board_is_its_familys(tmp_path: Path, board: str,
                                                    family: str) -> None:
    from fota_host import paths
    from fota_host.boards import deploy

    cfg = tmp_path / "device.json"
    cfg.write_text(json.dumps({"device_id": "dev-7", "wdt_s": 12,
                               "broker": {"host": "192.168.1.10", "user": "dev-7",
                                          "password": "pw"}}))
    plan = deploy.plan(board, "/dev/ttyACM0", cfg)
    entry = paths.firmware_dir() / "boards" / family / "main.py"
    assert plan.files["main.py"] == str(entry)
    libs = {Path(f).name for f in plan.files.values()}
    if family == "esp32":
        assert "esp32slot.mpy" in libs and "fileslot.mpy" not in libs
    else:
        assert "fileslot.mpy" in libs and "simple.mpy" in libs   # umqtt for the Pico
    # 12 s: above the Pico W's 8.388 s, within the Pico 2 W's 16.777 s and any ESP32's.
    with pytest.raises(deploy.DeployError, match="Pico W"):
        deploy.plan("pico_w", "/dev/ttyACM0", cfg)
