"""App bundles for file slots (Pico W, unix): one file, streamed into the inactive slot.

Format (little-endian), defined by this project and parsed on the device by
firmware/fota/fileslot.py:

    0   4  magic b"FOTB"
    4   1  format version (1)
    5   1  reserved (0)
    6   2  number of files
    8   4  payload length (bytes after this 64-byte header)
    12  4  CRC-32 of the payload
    16  32 version, UTF-8, NUL-padded
    48  16 reserved (0)
    then per file: u16 path length, path (UTF-8, relative, '/'-separated), u32 size, data
"""

from __future__ import annotations

import binascii
import json
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .. import paths
from .esp_image import version_bytes

MAGIC = b"FOTB"
FORMAT = 1
HEADER = 64
MAX_FILES = 256
MANIFEST = "manifest.json"


class BundleError(ValueError):
    pass


@dataclass
class Bundle:
    version: str
    files: dict[str, bytes]


def _check_path(name: str) -> str:
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts or not p.parts or len(name.encode()) > 120:
        raise BundleError(f"bad path in bundle: {name!r}")
    return str(p)


def pack(version: str, files: dict[str, bytes]) -> bytes:
    vb = version_bytes(version, BundleError)
    if not files or len(files) > MAX_FILES:
        raise BundleError(f"a bundle holds 1..{MAX_FILES} files")
    payload = bytearray()
    for name in sorted(files):
        nb = _check_path(name).encode()
        payload += struct.pack("<H", len(nb)) + nb + struct.pack("<I", len(files[name]))
        payload += files[name]
    crc = binascii.crc32(payload) & 0xFFFFFFFF
    header = MAGIC + struct.pack("<BBHII", FORMAT, 0, len(files), len(payload), crc)
    header += vb.ljust(32, b"\0") + b"\0" * 16
    assert len(header) == HEADER
    return header + bytes(payload)


def unpack(data: bytes) -> Bundle:
    if len(data) < HEADER or data[:4] != MAGIC:
        raise BundleError("not a FOTB app bundle")
    fmt, _, count, length, crc = struct.unpack_from("<BBHII", data, 4)
    if fmt != FORMAT:
        raise BundleError(f"bundle format {fmt} is not supported")
    payload = data[HEADER:]
    if len(payload) != length:
        raise BundleError(f"payload is {len(payload)} bytes, header says {length}")
    if binascii.crc32(payload) & 0xFFFFFFFF != crc:
        raise BundleError("bundle CRC mismatch")
    files: dict[str, bytes] = {}
    pos = 0
    for _ in range(count):
        (nlen,) = struct.unpack_from("<H", payload, pos)
        name = _check_path(payload[pos + 2:pos + 2 + nlen].decode())
        (size,) = struct.unpack_from("<I", payload, pos + 2 + nlen)
        start = pos + 6 + nlen
        files[name] = payload[start:start + size]
        pos = start + size
    version = data[16:48].split(b"\0", 1)[0].decode()
    return Bundle(version=version, files=files)


def add_manifest(files: dict[str, bytes], version: str, secure_version: int | None) -> None:
    """Add `manifest.json` ({"version", "secure_version"}) when a secure_version is given:
    the device reads the anti-rollback counter from it before switching."""
    if secure_version is None:
        return
    if not 0 <= secure_version <= 0xFFFFFFFF:
        raise BundleError("secure_version is a 32-bit unsigned number")
    files[MANIFEST] = json.dumps({"version": version,
                                  "secure_version": secure_version}).encode()


def header_version(data: bytes) -> str:
    """The version in a bundle's header (also of a signed bundle); BundleError if not one."""
    if len(data) < HEADER or data[:4] != MAGIC:
        raise BundleError("not a FOTB app bundle")
    return data[16:48].split(b"\0", 1)[0].decode("utf-8", "replace")


def secure_version(data: bytes) -> int:
    """The bundle's secure_version (its manifest.json's; 0 without one). A signed bundle
    (signature sector after the payload) is read too."""
    if len(data) < HEADER or data[:4] != MAGIC:
        raise BundleError("not a FOTB app bundle")
    (length,) = struct.unpack_from("<I", data, 8)
    files = unpack(data[:HEADER + length]).files
    try:
        value = json.loads(files.get(MANIFEST, b"{}")).get("secure_version", 0)
    except (ValueError, AttributeError):
        raise BundleError("manifest.json is not a JSON object") from None
    if not isinstance(value, int) or value < 0:
        raise BundleError("manifest.json's secure_version is not a number")
    return value


def _compile(src: Path, rel: str) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.mpy"
        proc = subprocess.run(
            [paths.mpy_cross_bin(), "-o", str(out), "-s", rel, str(src)],
            capture_output=True, text=True,
        )
        if proc.returncode != 0:
            raise BundleError(f"mpy-cross failed on {rel}:\n{proc.stderr.strip()}")
        return out.read_bytes()


def from_folder(folder: Path, version: str, compile_py: bool = True,
                secure_version: int | None = None) -> bytes:
    """Bundle an application folder; .py files become .mpy (except boot.py/main.py)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BundleError(f"{folder} is not a folder")
    files: dict[str, bytes] = {}
    for src in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = src.relative_to(folder).as_posix()
        if "__pycache__" in rel:
            continue
        if compile_py and src.suffix == ".py" and src.name not in ("boot.py", "main.py"):
            files[rel[:-3] + ".mpy"] = _compile(src, rel)
        else:
            files[rel] = src.read_bytes()
    if not any(n in files for n in ("app.py", "app.mpy")):
        raise BundleError(f"{folder} has no app.py: the launcher runs the app module")
    add_manifest(files, version, secure_version)
    return pack(version, files)


def sim_app(version: str, fail_health: bool = False) -> dict[str, bytes]:
    """The synthetic application used by simulated Pico W devices."""
    body = (
        f"VERSION = {version!r}\n"
        "def healthy():\n"
        f"    return {not fail_health!r}\n"
        "def main():\n"
        "    pass\n"
    )
    return {"app.py": body.encode()}
