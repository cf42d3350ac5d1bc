"""`fota hil` checks an ESP32 image against the board's own OTA slots, not a 4 MiB table:
read from the firmware file flashed on it (a combined firmware.bin merged by esptool,
made OTA-ready for 8 MiB / 16 MiB by `fota board prepare` through mp-image-tool-esp32),
from a dump of its partition table, or from chips.py; a table without two OTA slots is
refused with the way out. No platform runs here: an image that passes the layout check
goes on to "no platform service runs", one that does not never gets that far."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from esp_firmware import MIB, combined
from fota_host.boards import chips, hil, prepare
from fota_host.images import esp_image, synthetic

FOTA = [sys.executable, "-m", "fota_host"]
PASSED = "no platform service runs"         # the layout check passed; next: the platform
SLOT_8M = chips.OTA_SLOT_BY_FLASH[8 * MIB]    # 0x270000
SLOT_16M = chips.OTA_SLOT_BY_FLASH[16 * MIB]  # 0x280000


def app(size: int, chip: str = "esp32", version: str = "2.0.0") -> bytes:
    return esp_image.build_sim_image(version, size - size % 16, chip=chip)


def image_file(tmp_path: Path, size: int, chip: str = "esp32") -> Path:
    path = tmp_path / f"app-{size}-{chip}.bin"
    path.write_bytes(app(size, chip))
    return path


def config(tmp_path: Path) -> Path:
    path = tmp_path / "device.json"
    path.write_text(json.dumps({"device_id": "d", "broker": {"host": "127.0.0.1"}}))
    return path


def hil_check(tmp_path: Path, board: str, image: Path, **layout) -> str:
    """What `fota hil` says for this image and layout (the port exists: /dev/null)."""
    (tmp_path / "data").mkdir(exist_ok=True)
    with pytest.raises(hil.HilError) as exc:
        hil.run(board, "/dev/null", config(tmp_path), tmp_path / "data", image, "2.0.0",
                **layout)
    return str(exc.value)


@pytest.fixture(scope="module")
def firmwares(tmp_path_factory) -> dict[str, Path]:
    """MicroPython-like firmware files: the plain one (one factory app), and it made
    OTA-ready for 8 MiB and 16 MiB flash; one for the ESP32-S3."""
    root = tmp_path_factory.mktemp("fw")
    plain = root / "ESP32_GENERIC.bin"
    plain.write_bytes(combined(app(1_300_000, version="v1.29.0")))
    out = {"plain": plain}
    for size in ("8M", "16M"):
        out[size] = root / f"ota-{size}.bin"
        prepare.prepare(plain, out[size], size)
    s3 = root / "ESP32_GENERIC_S3.bin"
    s3.write_bytes(combined(app(1_300_000, "esp32s3", "v1.29.0"), "esp32s3", flash_mb=8))
    out["s3-8M"] = root / "ota-s3-8M.bin"
    prepare.prepare(s3, out["s3-8M"], "8M")
    return out


@pytest.mark.parametrize("size,slot", [("8M", SLOT_8M), ("16M", SLOT_16M)])
def test_the_firmware_flashed_on_the_board_decides_the_slot(tmp_path, firmwares, size, slot):
    fw = firmwares[size]
    # 2.0 MB: over the 4 MiB table's 1.5 MiB slot, within the 8 and 16 MiB ones
    assert PASSED in hil_check(tmp_path, "esp32", image_file(tmp_path, 2_000_000), table=str(fw))
    over = slot + 4096
    said = hil_check(tmp_path, "esp32", image_file(tmp_path, over), table=str(fw))
    assert f"does not fit the {slot:#x} byte OTA slot of {fw}" in said
    assert f"over by {over - over % 16 - slot}" in said


def test_a_dump_of_the_partition_table_works_as_well(tmp_path, firmwares):
    """`esptool read-flash 0x8000 0xc00 table.bin` on an 8 MiB board."""
    data = firmwares["8M"].read_bytes()
    table = tmp_path / "table.bin"
    table.write_bytes(data[0x8000 - 0x1000:0x8000 - 0x1000 + 0xC00])   # file starts at 0x1000
    assert PASSED in hil_check(tmp_path, "esp32", image_file(tmp_path, 2_000_000),
                               table=str(table))
    said = hil_check(tmp_path, "esp32", image_file(tmp_path, SLOT_8M + 16), table=str(table))
    assert f"does not fit the {SLOT_8M:#x} byte OTA slot" in said


def test_s3_firmware_starts_at_flash_0_and_must_match_the_board(tmp_path, firmwares):
    fw = str(firmwares["s3-8M"])
    assert PASSED in hil_check(tmp_path, "esp32s3", image_file(tmp_path, 2_000_000, "esp32s3"),
                               table=fw)
    said = hil_check(tmp_path, "esp32c3", image_file(tmp_path, 100_000, "esp32c3"), table=fw)
    assert "is a firmware for esp32s3, not for the ESP32-C3" in said


def test_a_table_without_two_ota_slots_is_refused_with_the_way_out(tmp_path, firmwares):
    said = hil_check(tmp_path, "esp32", image_file(tmp_path, 100_000),
                     table=str(firmwares["plain"]))
    assert "has no two OTA app partitions (ota_0, ota_1)" in said
    assert "factory (app/factory" in said and "fota board prepare" in said


def test_without_a_table_chips_py_gives_the_board_usual_flash(tmp_path):
    image_s3 = image_file(tmp_path, 2_000_000, "esp32s3")
    assert PASSED in hil_check(tmp_path, "esp32s3", image_s3)          # 8 MiB: 0x270000
    said = hil_check(tmp_path, "esp32c3", image_file(tmp_path, 2_000_000, "esp32c3"))
    assert ("does not fit the 0x180000 byte OTA slot of chips.py: MicroPython's OTA table "
            "for the ESP32-C3's usual 4 MiB flash") in said
    assert PASSED in hil_check(tmp_path, "esp32c3", image_file(tmp_path, 2_000_000, "esp32c3"),
                               flash_size="16M")


def test_what_is_not_a_table_and_where_none_can_be_read(tmp_path):
    image = image_file(tmp_path, 100_000)
    junk = tmp_path / "notes.txt"
    junk.write_text("hello")
    assert "neither an ESP32 firmware file nor a partition table" in \
        hil_check(tmp_path, "esp32", image, table=str(junk))
    assert "cannot read" in hil_check(tmp_path, "esp32", image, table=str(tmp_path / "nope"))
    # --table board reads the flash through the ROM bootloader: a pseudo-terminal (a
    # simulated board) has none, and says what to pass instead
    master, slave = os.openpty()
    try:
        port = os.ttyname(slave)
        with pytest.raises(hil.HilError, match="not a USB serial port.*--table FILE"):
            hil.run("esp32", port, config(tmp_path), tmp_path, image, "2.0.0", table="board")
    finally:
        os.close(master)
        os.close(slave)
    # a Pico's slots are folders
    bundle = tmp_path / "app.fotb"
    bundle.write_bytes(synthetic.sim_image("pico_w", "2.0.0", None))
    assert "are for ESP32 boards" in hil_check(tmp_path, "pico_w", bundle, flash_size="8M")


def test_the_cli_takes_table_and_flash_size(tmp_path, firmwares):
    image = image_file(tmp_path, 2_000_000)
    base = [*FOTA, "hil", "--board", "esp32", "--port", "/dev/null", "--config",
            str(config(tmp_path)), "--data", str(tmp_path), "--image", str(image),
            "--version", "2.0.0"]
    proc = subprocess.run(base, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "does not fit the 0x180000 byte OTA slot" in proc.stderr
    for extra in (["--table", str(firmwares["8M"])], ["--flash-size", "16M"]):
        proc = subprocess.run([*base, *extra], capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0 and PASSED in proc.stderr, proc.stderr
