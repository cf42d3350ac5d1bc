"""ESP32 app images: build synthetic ones for simulation, parse and validate real ones.

Layout (ESP-IDF "app image format"): a 24-byte header (magic 0xE9, segment count,
flash settings, entry point, extended header with the chip id as u16 at offset 12
and the hash-appended flag at 23), segments (8-byte header + data), zero padding
so the checksum byte ends a 16-byte line, the checksum (XOR of all segment data
with seed 0xEF), then the SHA-256 of everything before it when hash-appended.
The first segment (flash-mapped data, DROM) starts with `esp_app_desc_t` (magic
0xABCD5432), so the descriptor sits at file offset 0x20.

Parsing is esptool's (`esptool.bin_image.LoadFirmwareImage`, the reference parser of
these images): segments, checksum and appended digest are read by it; this module adds
only what the project needs on top (the app descriptor's fields, and messages that say
what to do).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from ..boards import chips

IMAGE_MAGIC = 0xE9
APP_DESC_MAGIC = 0xABCD5432
CHIP_IDS = chips.chip_ids()
CHIP_NAMES = {v: k for k, v in CHIP_IDS.items()}
SIM_PROJECT = "fota-sim"
SIM_PROJECT_FAIL_HEALTH = "fota-sim-fail-health"
# MicroPython's ESP32_GENERIC OTA partition table: two 1.5 MiB app slots on 4 MiB
# (ports/esp32/partitions-4MiB-ota.csv); 8 MiB and up: partitions-8MiBplus-ota.csv.
OTA_SLOT_SIZE = chips.OTA_SLOT_BY_FLASH[4 * chips.MIB]
PARTITION_LAYOUTS = {"esp32-generic-ota": OTA_SLOT_SIZE,
                     "8mib-ota": chips.OTA_SLOT_BY_FLASH[8 * chips.MIB],
                     "16mib-ota": chips.OTA_SLOT_BY_FLASH[16 * chips.MIB]}


class ImageError(ValueError):
    pass


@dataclass
class AppImage:
    chip: str
    chip_id: int
    version: str
    project: str
    idf_version: str
    size: int           # bytes the image occupies (through checksum and hash)
    hash_ok: bool | None
    secure_version: int = 0   # esp_app_desc_t.secure_version (anti-rollback counter)


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def version_bytes(version: str, error: type[ValueError] = ValueError) -> bytes:
    """`version` as the image stores it: 1..31 UTF-8 bytes (esp_app_desc_t.version is a
    32-byte C string; the bundle header has the same field), printable (a device reports it
    on /ota/inform, and the platform refuses control characters). Raises `error`."""
    try:
        vb = version.encode()
    except UnicodeEncodeError:
        raise error(f"version {version!r} is not valid Unicode") from None
    if not vb or len(vb) > 31:
        raise error("version must be 1..31 bytes")
    if any(c < 32 or c == 127 for c in vb):
        raise error(f"version {version!r} holds a control character")
    return vb


def _app_desc(version: str, project: str) -> bytes:
    vb = version_bytes(version, ImageError)
    desc = struct.pack("<II8x", APP_DESC_MAGIC, 0)
    desc += vb.ljust(32, b"\0") + project.encode().ljust(32, b"\0")
    desc += b"00:00:00".ljust(16, b"\0") + b"Jan  1 2026".ljust(16, b"\0")
    desc += b"v5.2-sim".ljust(32, b"\0") + hashlib.sha256(vb).digest()
    return desc.ljust(256, b"\0")


def _filler(seed: bytes, n: int) -> bytes:
    """Deterministic incompressible bytes, so corruption anywhere is visible."""
    out = bytearray()
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(seed + counter.to_bytes(8, "little")).digest()
        counter += 1
    return bytes(out[:n])


def build_sim_image(version: str, size: int | None, chip: str = "esp32",
                    fail_health: bool = False, payload: bytes | None = None) -> bytes:
    """A valid ESP32 app image of exactly `size` bytes carrying `version`.

    With `payload`, the segment data after the app descriptor is `payload` (zero-padded
    to `size` when given, else to the next 16-byte line), so image pairs built from real
    binaries diff like real ones."""
    if chip not in CHIP_IDS:
        raise ImageError(f"unknown chip {chip!r}; one of {', '.join(CHIP_IDS)}")
    project = SIM_PROJECT_FAIL_HEALTH if fail_health else SIM_PROJECT
    desc = _app_desc(version, project)
    if payload is not None and size is None:
        size = 80 + len(desc) + len(payload)
        size += -size % 16
    if size is None or size % 16 or size < 512:
        raise ImageError("an ESP32 app image is a multiple of 16 bytes, at least 512")
    seg_len = size - 80         # 24 header + 8 segment header + 16 pad/checksum + 32 sha
    if payload is not None:
        if len(desc) + len(payload) > seg_len:
            raise ImageError(f"a {len(payload)} byte payload needs an image of at least "
                             f"{80 + len(desc) + len(payload)} bytes")
        seg = desc + payload + bytes(seg_len - len(desc) - len(payload))
    else:
        seg = desc + _filler(version.encode() + project.encode(), seg_len - len(desc))
    rom = _rom(chip)
    header = struct.pack(
        "<BBBBI", IMAGE_MAGIC, 1, 2, 0x20, rom.IROM_MAP_START
    ) + struct.pack("<BBBBHBHH4xB", 0xEE, 0, 0, 0, CHIP_IDS[chip], 0, 0, 0xFFFF, 1)
    assert len(header) == 24
    checksum = 0xEF
    for b in seg:
        checksum ^= b
    # The first segment is mapped data (DROM) at the same offset in its 64 KiB page
    # as in the file, as ESP-IDF links it: esptool then names it and its descriptor.
    body = header + struct.pack("<II", rom.DROM_MAP_START + 0x20, seg_len) + seg
    pad = 16 - (len(body) % 16)
    body += b"\0" * (pad - 1) + bytes([checksum])
    image = body + hashlib.sha256(body).digest()
    assert len(image) == size
    return image


def _rom(chip: str):  # -> esptool ROM class (untyped library)
    from esptool.targets import CHIP_DEFS

    return CHIP_DEFS[chip]


def parse_app_image(data: bytes, check_hash: bool = True) -> AppImage:
    """Validate the header, segments, checksum, app descriptor and appended hash with
    esptool's image loader; explain failures."""
    from esptool.bin_image import LoadFirmwareImage
    from esptool.util import FatalError

    if len(data) < 0x20 + 256:
        raise ImageError(f"{len(data)} bytes is too short for an ESP32 app image")
    if data[0] != IMAGE_MAGIC:
        raise ImageError(
            f"first byte is 0x{data[0]:02x}, not 0xE9: this is not an ESP32 image"
        )
    chip_id = struct.unpack_from("<H", data, 12)[0]
    (desc_magic,) = struct.unpack_from("<I", data, 0x20)
    if desc_magic != APP_DESC_MAGIC:
        raise ImageError(
            "no app descriptor (0xABCD5432) at offset 0x20: this looks like the combined "
            "firmware.bin that starts with the bootloader. Upload the app image instead "
            "(micropython.bin in the build folder, or the .app-bin download)."
        )
    chip = CHIP_NAMES.get(chip_id)
    if chip is None:
        raise ImageError(f"chip id {chip_id} in the image header is none of "
                         f"{', '.join(f'{n} ({i})' for n, i in CHIP_IDS.items())}")
    try:
        image = LoadFirmwareImage(chip, data)
    except (FatalError, RuntimeError, struct.error) as exc:
        text = str(exc)
        if "End of file" in text or isinstance(exc, struct.error):
            raise ImageError(f"segment runs past the end of the file ({text})") from None
        raise ImageError(f"esptool cannot read it: {text}") from None
    size = image.data_length
    hash_ok: bool | None = None
    if image.append_digest:
        if len(image.stored_digest) < 32:
            raise ImageError("the appended SHA-256 is missing (file truncated?)")
        if check_hash:
            hash_ok = image.stored_digest == image.calc_digest
            if not hash_ok:
                raise ImageError("the appended SHA-256 does not match: the file is corrupt")
        size += 32
    if image.checksum != image.calculate_checksum():
        raise ImageError(f"the checksum byte is 0x{image.checksum:02x}, the segments give "
                         f"0x{image.calculate_checksum():02x}: the file is corrupt")
    desc = image.segments[0].data[:0xB0] if image.segments else b""
    if len(desc) < 0xB0:
        raise ImageError("the first segment is too short to hold the app descriptor")
    return AppImage(
        chip=chip,
        chip_id=chip_id,
        version=_cstr(desc[0x10:0x30]),
        project=_cstr(desc[0x30:0x50]),
        idf_version=_cstr(desc[0x70:0x90]),
        size=size,
        hash_ok=hash_ok,
        secure_version=struct.unpack_from("<I", desc, 4)[0],
    )
