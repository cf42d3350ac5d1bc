"""`fota pack esp32`: real-image validation before anything reaches a board."""

from __future__ import annotations

import hashlib
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from fota_host.images import esp_image

FOTA = [sys.executable, "-m", "fota_host"]


def pack(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FOTA, "pack", "esp32", *map(str, args)], capture_output=True,
                          text=True, timeout=120)


def bootloader_image() -> bytes:
    """An ESP32 bootloader image: 0xE9 header, but no app descriptor at 0x20."""
    header = struct.pack("<BBBBI", 0xE9, 1, 2, 0x20, 0x40080400)
    header += struct.pack("<BBBBHBHH4xB", 0xEE, 0, 0, 0, 0, 0, 0, 0xFFFF, 0)
    seg = struct.pack("<II", 0x3FFF0000, 0x1000) + bytes([0x50]) + b"\x11" * 0xFFF
    return header + seg


def combined_firmware(app: bytes) -> bytes:
    """firmware.bin as MicroPython's ESP32 build writes it: the file starts at flash 0x1000
    (bootloader), partition table at 0x8000, the app at 0x10000 (file offset 0xF000)."""
    out = bytearray(b"\xff" * 0xF000)
    boot = bootloader_image()
    out[0:len(boot)] = boot
    out[0x7000:0x7020] = b"\xaa\x50" + b"\x00" * 30       # partition table entry magic
    return bytes(out) + app


@pytest.fixture
def app_bin(tmp_path: Path) -> Path:
    path = tmp_path / "micropython.bin"
    path.write_bytes(esp_image.build_sim_image("v1.29.0", 96 * 1024))
    return path


def test_valid_app_image_prints_size_digests_version_chip(app_bin: Path) -> None:
    proc = pack(app_bin, "--version", "v1.29.0")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    data = app_bin.read_bytes()
    assert out["size"] == len(data)
    assert out["md5"] == hashlib.md5(data).hexdigest()
    assert out["sha256"] == hashlib.sha256(data).hexdigest()
    assert out["version"] == "v1.29.0" and out["chip"] == "esp32"
    assert out["slot_size"] == 0x180000 and out["free"] == 0x180000 - len(data)


def test_combined_firmware_bin_is_refused_with_the_file_to_use(tmp_path: Path,
                                                               app_bin: Path) -> None:
    fw = tmp_path / "firmware.bin"
    fw.write_bytes(combined_firmware(app_bin.read_bytes()))
    proc = pack(fw, "--version", "v1.29.0")
    assert proc.returncode != 0 and proc.stdout == ""
    assert "combined firmware.bin" in proc.stderr
    assert "micropython.bin" in proc.stderr           # which file to upload instead
    assert "0xf000" in proc.stderr                    # where the app sits inside it


def test_bare_bootloader_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "bootloader.bin"
    f.write_bytes(bootloader_image())
    proc = pack(f, "--version", "v1")
    assert proc.returncode != 0 and "app descriptor" in proc.stderr


def test_not_an_esp32_image(tmp_path: Path) -> None:
    f = tmp_path / "app.uf2"
    f.write_bytes(b"UF2\n" + b"\0" * 4096)
    proc = pack(f, "--version", "v1")
    assert proc.returncode != 0 and "not an ESP32 image" in proc.stderr


def test_other_chip_is_refused_unless_asked_for(tmp_path: Path) -> None:
    f = tmp_path / "s3.bin"
    f.write_bytes(esp_image.build_sim_image("v2", 8192, chip="esp32s3"))
    proc = pack(f, "--version", "v2")
    assert proc.returncode != 0
    assert "esp32s3" in proc.stderr and "not esp32" in proc.stderr
    ok = pack(f, "--version", "v2", "--chip", "esp32s3")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["chip"] == "esp32s3"


def test_image_larger_than_the_ota_slot_is_refused_but_fits_a_bigger_layout(
        tmp_path: Path) -> None:
    f = tmp_path / "big.bin"
    f.write_bytes(esp_image.build_sim_image("v3", esp_image.OTA_SLOT_SIZE + 4096))
    proc = pack(f, "--version", "v3")
    assert proc.returncode != 0
    assert "does not fit" in proc.stderr and "over by 4096 bytes" in proc.stderr
    ok = pack(f, "--version", "v3", "--layout", "8mib-ota")
    assert ok.returncode == 0, ok.stderr


def test_version_must_match_what_the_device_will_report(app_bin: Path) -> None:
    proc = pack(app_bin, "--version", "v9.9.9")
    assert proc.returncode != 0
    assert "'v1.29.0'" in proc.stderr and "never see" in proc.stderr


def test_corrupt_image_is_refused(tmp_path: Path, app_bin: Path) -> None:
    data = bytearray(app_bin.read_bytes())
    data[5000] ^= 0xFF
    f = tmp_path / "corrupt.bin"
    f.write_bytes(bytes(data))
    proc = pack(f, "--version", "v1.29.0")
    assert proc.returncode != 0 and "SHA-256 does not match" in proc.stderr


def test_register_creates_a_platform_package(tmp_path: Path, app_bin: Path) -> None:
    data_dir = tmp_path / "platform"
    data_dir.mkdir()
    proc = pack(app_bin, "--version", "v1.29.0", "--register", "--data", data_dir,
                "--module", "MCU")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    pkg = out["package"]
    assert pkg["version"] == "v1.29.0" and pkg["md5"] == out["md5"]
    assert pkg["size"] == out["size"]
    listed = subprocess.run([*FOTA, "package", "list", "--data", str(data_dir)],
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert pkg["id"] in listed.stdout


def test_register_needs_a_data_folder(app_bin: Path) -> None:
    proc = pack(app_bin, "--version", "v1.29.0", "--register")
    assert proc.returncode != 0 and "--data" in proc.stderr


def test_nothing_is_registered_when_the_image_is_refused(tmp_path: Path) -> None:
    data_dir = tmp_path / "platform"
    data_dir.mkdir()
    f = tmp_path / "firmware.bin"
    f.write_bytes(combined_firmware(esp_image.build_sim_image("v1", 8192)))
    proc = pack(f, "--version", "v1", "--register", "--data", data_dir)
    assert proc.returncode != 0
    assert not list(data_dir.rglob("*.bin"))
