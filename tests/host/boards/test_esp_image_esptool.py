"""ESP32 app images read through esptool: the simulated images are ones esptool's own
`image-info` accepts for each chip, broken ones are refused with the reason, and a combined
firmware.bin made by esptool's merge-bin gives its app back through `fota pack esp32`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from esp_firmware import combined, partition_table
from fota_host.boards import chips
from fota_host.images import esp32check, esp_image, facts

FOTA = [sys.executable, "-m", "fota_host"]
CHIPS = ["esp32", "esp32s3", "esp32c3", "esp32c6"]


def esptool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "esptool", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("chip", CHIPS)
def test_sim_image_is_what_esptool_image_info_calls_valid(tmp_path: Path, chip: str) -> None:
    f = tmp_path / "app.bin"
    f.write_bytes(esp_image.build_sim_image("2.1.0", 64 * 1024, chip=chip))
    proc = esptool("image-info", f)
    assert proc.returncode == 0, proc.stderr
    assert f"Chip ID: {chips.ESP32_CHIPS[chip].chip_id} " in proc.stdout
    assert "Checksum: " in proc.stdout and "(valid)" in proc.stdout
    assert "invalid" not in proc.stdout
    assert "App version: 2.1.0" in proc.stdout          # the descriptor sits in DROM
    app = esp_image.parse_app_image(f.read_bytes())
    assert (app.chip, app.chip_id, app.version) == (chip, chips.ESP32_CHIPS[chip].chip_id,
                                                    "2.1.0")


def test_truncated_and_corrupt_images_are_refused() -> None:
    data = esp_image.build_sim_image("1.0", 8192)
    with pytest.raises(esp_image.ImageError, match="past the end"):
        esp_image.parse_app_image(data[:5000])
    bad = bytearray(data)
    bad[3000] ^= 0x01
    with pytest.raises(esp_image.ImageError, match="SHA-256 does not match"):
        esp_image.parse_app_image(bytes(bad))
    # Checksum alone (the hash left out of the check): esptool's checksum is still applied.
    with pytest.raises(esp_image.ImageError, match="checksum byte"):
        esp_image.parse_app_image(bytes(bad), check_hash=False)


def test_unknown_chip_id_is_named() -> None:
    data = bytearray(esp_image.build_sim_image("1.0", 8192))
    data[12] = 0x42
    with pytest.raises(esp_image.ImageError, match="chip id 66"):
        esp_image.parse_app_image(bytes(data))


def test_package_facts_come_from_the_parsed_image() -> None:
    data = esp_image.build_sim_image("3.4.5", 16384)
    f = facts.image_facts(data)
    assert (f.format, f.version, f.secure_version) == ("esp32", "3.4.5", 0)


def pack(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FOTA, "pack", "esp32", *map(str, args)], capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("chip", ["esp32", "esp32c3"])
def test_combined_firmware_gives_its_app_and_says_from_where(tmp_path: Path,
                                                            chip: str) -> None:
    app = esp_image.build_sim_image("v1.29.0", 200_000 - 200_000 % 16, chip=chip)
    fw = tmp_path / "firmware.bin"
    fw.write_bytes(combined(app, chip=chip))
    out = tmp_path / "app.bin"
    proc = pack(fw, "--chip", chip, "--version", "v1.29.0", "-o", out)
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    assert answer["extracted_from"]["partition"] == "factory"
    assert answer["extracted_from"]["flash_offset"] == 0x10000
    assert answer["file"] == str(out) and answer["source"] == str(fw)
    assert out.read_bytes() == app and answer["size"] == len(app)
    assert "partition factory" in proc.stderr


def test_combined_firmware_with_the_wrong_chip_is_refused(tmp_path: Path) -> None:
    fw = tmp_path / "firmware.bin"
    fw.write_bytes(combined(esp_image.build_sim_image("v1", 8192, chip="esp32c6"),
                            chip="esp32c6"))
    proc = pack(fw, "--version", "v1")
    assert proc.returncode != 0 and "esp32c6" in proc.stderr and "not esp32" in proc.stderr


def test_combined_file_without_an_app_stays_refused(tmp_path: Path) -> None:
    full = combined(esp_image.build_sim_image("v1", 8192))
    fw = tmp_path / "boot-and-table.bin"
    fw.write_bytes(full[:0xF000])
    assert esp32check.extract_app(fw.read_bytes()) is None
    proc = pack(fw, "--version", "v1")
    assert proc.returncode != 0 and proc.stdout == ""
    assert "combined firmware.bin" in proc.stderr and "micropython.bin" in proc.stderr


def test_app_in_an_ota_slot_is_found_too() -> None:
    from mp_image_tool_esp32.partition_table import PartitionTable

    table = PartitionTable(4 * 1024 * 1024)
    table.add_part("nvs", "nvs", 0x4000, 0x9000)
    table.add_part("otadata", "ota", 0x2000, 0xD000)
    table.add_part("ota_0", "ota_0", 0x180000, 0x10000)
    table.add_part("ota_1", "ota_1", 0x180000, 0x190000)
    app = esp_image.build_sim_image("v2", 8192)
    found = esp32check.extract_app(combined(app, table=table.to_bytes()))
    assert found is not None and found.partition == "ota_0" and found.app == app
    assert partition_table() != table.to_bytes()
