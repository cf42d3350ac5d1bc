"""The host side of signed images that the device check does not cover: key files,
digest spelling, and the anti-rollback counter (`secure_version`) in ESP32 app images."""

from __future__ import annotations

import hashlib
import stat
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from fota_host.images import esp_image, signing


def _checksum_ok(image: bytes) -> bool:
    """ESP-IDF's image checksum: XOR of all segment data, seeded 0xEF, ends a 16-byte line."""
    pos, xor = 24, 0xEF
    for _ in range(image[1]):
        length = struct.unpack_from("<I", image, pos + 4)[0]
        for b in image[pos + 8:pos + 8 + length]:
            xor ^= b
        pos += 8 + length
    pos += 16 - pos % 16
    return image[pos - 1] == xor


def test_secure_version_is_set_and_the_image_stays_valid() -> None:
    image = esp_image.build_sim_image("1.2.0", 64 * 1024)
    assert signing.secure_version(image) == 0 and _checksum_ok(image)
    bumped = signing.set_secure_version(image, 7)
    assert signing.secure_version(bumped) == 7
    assert _checksum_ok(bumped)
    parsed = esp_image.parse_app_image(bumped)          # checks the appended SHA-256
    assert parsed.hash_ok and parsed.version == "1.2.0"
    assert len(bumped) == len(image)
    assert sum(a != b for a, b in zip(image, bumped, strict=True)) <= 1 + 1 + 32


def test_secure_version_refuses_signed_images_and_non_images(tmp_path: Path) -> None:
    image = esp_image.build_sim_image("1.2.0", 64 * 1024)
    key = signing.generate_key()
    signed = signing.sign(signing.set_secure_version(image, 3), key)
    assert signing.secure_version(signed) == 3                   # still readable
    with pytest.raises(signing.SigningError, match="before signing"):
        signing.set_secure_version(signed, 4)
    with pytest.raises(signing.SigningError, match="app descriptor"):
        signing.set_secure_version(b"\x00" * 4096, 1)


def test_generated_key_file_is_private_and_espsecure_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    pem = signing.generate_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert b"BEGIN RSA PRIVATE KEY" in pem
    with pytest.raises(FileExistsError):
        signing.generate_key(path)                               # never overwrites a key
    out = tmp_path / "digest.bin"
    subprocess.run([sys.executable, "-m", "espsecure", "digest-sbv2-public-key",
                    "--keyfile", str(path), "-o", str(out)], check=True, capture_output=True)
    assert out.read_bytes().hex() == signing.key_digest(path)
    # the public half names the same key
    pub = signing.load_public_key(path)
    assert signing.key_digest(pub) == signing.key_digest(pem)


def test_wrong_keys_are_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    small = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = small.private_bytes(serialization.Encoding.PEM,
                              serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
    with pytest.raises(signing.SigningError, match="RSA-3072"):
        signing.sign(b"x" * 100, pem)
    ecpem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    with pytest.raises(signing.SigningError, match="RSA-3072"):
        signing.key_digest(ecpem)
    with pytest.raises(signing.SigningError, match="PEM"):
        signing.sign(b"x", b"not a key")


def test_digest_spellings() -> None:
    d = hashlib.sha256(b"k").hexdigest()
    spaced = " ".join(d[i:i + 2] for i in range(0, 64, 2))     # espsecure's printout
    assert signing.normalize_digest(spaced.upper()) == d
    with pytest.raises(signing.SigningError):
        signing.normalize_digest(d[:-1])
    assert signing.verify(signing.sign(b"abc", signing.generate_key()), [spaced])[1] \
        == "untrusted key"
