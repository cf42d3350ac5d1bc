"""`fota board prepare`: a MicroPython ESP32 firmware.bin (bootloader, plain partition table,
app; merged by esptool, table by mp-image-tool-esp32) made OTA-ready, and its errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from esp_firmware import MIB, combined
from fota_host.boards import chips
from fota_host.images import esp32check, esp_image

FOTA = [sys.executable, "-m", "fota_host"]


def prepare(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FOTA, "board", "prepare", *map(str, args)], capture_output=True,
                          text=True, timeout=120)


def app_image(size: int, chip: str = "esp32", version: str = "v1.29.0") -> bytes:
    return esp_image.build_sim_image(version, size - size % 16, chip=chip)


@pytest.fixture
def firmware(tmp_path: Path) -> Path:
    path = tmp_path / "ESP32_GENERIC-v1.29.0.bin"
    path.write_bytes(combined(app_image(1_300_000)))
    return path


def test_plain_firmware_gets_an_ota_table_the_app_in_ota_0(tmp_path: Path,
                                                          firmware: Path) -> None:
    out = tmp_path / "ota.bin"
    proc = prepare(firmware, "-o", out)
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    slot = chips.OTA_SLOT_BY_FLASH[4 * MIB]
    assert [(s["name"], s["offset"], s["size"]) for s in answer["slots"]] == [
        ("ota_0", 0x10000, slot), ("ota_1", 0x10000 + slot, slot)]
    assert answer["app_from"] == "factory" and answer["version"] == "v1.29.0"
    assert answer["free"] == slot - answer["app_size"]
    # The file written holds that table (read back by mp-image-tool-esp32) and the same app.
    data = out.read_bytes()
    _, table, _ = esp32check.read_table(data)
    assert {p.name for p in table} >= {"otadata", "ota_0", "ota_1"}
    assert "factory" not in {p.name for p in table}
    found = esp32check.extract_app(data)
    assert found is not None and found.partition == "ota_0"
    assert found.app == esp32check.extract_app(firmware.read_bytes()).app  # type: ignore[union-attr]
    # The flash command names the chip and the bootloader's offset; the original is untouched.
    assert f"write-flash 0x1000 {out}" in proc.stderr and "--chip esp32" in proc.stderr
    assert esp32check.read_table(firmware.read_bytes())[1].find("factory") is not None


def test_sim_and_hil_use_the_slot_size_the_table_gets() -> None:
    # The simulated ESP32 (firmware/sim/esp32.py) and `fota pack esp32`'s default layout.
    assert esp_image.OTA_SLOT_SIZE == chips.OTA_SLOT_BY_FLASH[4 * MIB] == 0x180000
    sim = (Path(__file__).parents[3] / "firmware" / "sim" / "esp32.py").read_text()
    assert "0x180000" in sim


@pytest.mark.parametrize("size,slot", [("8M", 0x270000), ("16M", 0x280000)])
def test_bigger_flash_gives_bigger_slots_and_the_bootloader_says_so(
        tmp_path: Path, firmware: Path, size: str, slot: int) -> None:
    out = tmp_path / f"ota-{size}.bin"
    proc = prepare(firmware, "--flash-size", size, "-o", out)
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    assert answer["slot_size"] == slot and answer["flash_size"] == int(size[:-1]) * MIB
    header, table, _ = esp32check.read_table(out.read_bytes())
    assert header.flash_size == int(size[:-1]) * MIB
    assert table.by_name("ota_1").size == slot


def test_s3_firmware_starts_at_flash_0(tmp_path: Path) -> None:
    fw = tmp_path / "ESP32_GENERIC_S3.bin"
    fw.write_bytes(combined(app_image(400_000, "esp32s3"), chip="esp32s3", flash_mb=8))
    proc = prepare(fw, "-o", tmp_path / "ota.bin")
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    assert answer["chip"] == "esp32s3" and answer["slot_size"] == 0x270000
    assert "--chip esp32s3" in proc.stderr and "write-flash 0x0 " in proc.stderr


def test_app_too_big_for_the_slot_is_refused_with_the_way_out(tmp_path: Path) -> None:
    fw = tmp_path / "big.bin"
    fw.write_bytes(combined(app_image(1_600_000)))     # > 1.5 MiB: issue #12745
    out = tmp_path / "ota.bin"
    proc = prepare(fw, "-o", out)
    assert proc.returncode != 0 and proc.stdout == ""
    assert "does not fit" in proc.stderr and "--flash-size 8M" in proc.stderr
    assert not out.exists()
    ok = prepare(fw, "--flash-size", "8M", "-o", out)
    assert ok.returncode == 0, ok.stderr


def test_app_without_room_to_grow_is_refused(tmp_path: Path) -> None:
    fw = tmp_path / "full.bin"
    fw.write_bytes(combined(app_image(0x180000 - 64 * 1024)))
    proc = prepare(fw, "-o", tmp_path / "ota.bin")
    assert proc.returncode != 0
    assert "room" not in proc.stdout and "grow into" in proc.stderr and "#12745" in proc.stderr


def test_an_app_image_alone_is_not_a_firmware(tmp_path: Path) -> None:
    app = tmp_path / "micropython.bin"
    app.write_bytes(app_image(200_000))
    proc = prepare(app, "-o", tmp_path / "ota.bin")
    assert proc.returncode != 0 and "app image" in proc.stderr and "firmware.bin" in proc.stderr


def test_not_a_firmware_at_all(tmp_path: Path) -> None:
    f = tmp_path / "notes.txt"
    f.write_bytes(b"hello\n" * 1000)
    proc = prepare(f, "-o", tmp_path / "ota.bin")
    assert proc.returncode != 0 and "not a MicroPython ESP32 firmware" in proc.stderr


def test_firmware_without_an_app_is_refused(tmp_path: Path, firmware: Path) -> None:
    cut = tmp_path / "cut.bin"
    cut.write_bytes(firmware.read_bytes()[:0xF000])     # bootloader and table, no app
    proc = prepare(cut, "-o", tmp_path / "ota.bin")
    assert proc.returncode != 0 and "no app image" in proc.stderr


def test_bad_flash_size_is_refused(tmp_path: Path, firmware: Path) -> None:
    proc = prepare(firmware, "--flash-size", "3M", "-o", tmp_path / "ota.bin")
    assert proc.returncode != 0 and "3M" in proc.stderr and "16M" in proc.stderr


def test_output_must_not_overwrite_the_original(firmware: Path) -> None:
    before = firmware.read_bytes()
    proc = prepare(firmware, "-o", firmware)
    assert proc.returncode != 0 and "new file" in proc.stderr
    assert firmware.read_bytes() == before
