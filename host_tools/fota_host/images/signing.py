"""Signed images: ESP-IDF Secure Boot V2 signature sectors (RSA-3072, RSA-PSS/SHA-256).

The format is the one `espsecure sign-data --version 2` writes, so one signing
pipeline serves this project's device check and a chip with Secure Boot V2 in its
eFuses: the image padded with 0xFF to a 4 KiB boundary, then a 4 KiB sector with up
to three 1216-byte signature blocks (magic 0xE7, version 0x02, the image's SHA-256,
the public key n/e/rinv/m' little-endian, the RSA-PSS signature little-endian, a
CRC-32 of the first 1196 bytes, 16 zero bytes), the rest of the sector 0xFF.

A key is named by its digest: SHA-256 of the 776 key bytes of a block, what
`espsecure digest-sbv2-public-key` writes and what eFuses hold. The device twin of
this module is firmware/fota/sbv2.py.

Also here: the ESP32 app descriptor's `secure_version` (ESP-IDF's anti-rollback
counter), read and set in an unsigned app image.
"""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

SECTOR = 4096
BLOCK = 1216
MAX_BLOCKS = 3
MAGIC = 0xE7
VERSION_RSA = 0x02
VERSION_ECDSA = 0x03
KEY_BITS = 3072
_LEN = KEY_BITS // 8
_KEY = slice(36, 812)
_CRC_AT = 1196
_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
_BLOCK_FMT = "<BBxx32s384sI384sI384s"
SCHEMES = ("rsa3072",)

# ESP32 app image: the first segment's data starts at 0x20 with esp_app_desc_t.
_IMAGE_MAGIC = 0xE9
_APP_DESC_MAGIC = 0xABCD5432
_SECURE_VERSION_AT = 0x24


class SigningError(ValueError):
    """A key or image that cannot be signed or read; the message says why."""


@dataclass
class BlockInfo:
    index: int
    scheme: str              # "rsa3072" or "ecdsa" (ECDSA blocks are listed, not verified)
    key_digest: str          # 64 hex
    digest_ok: bool          # the block's image SHA-256 matches the file


@dataclass
class SignatureInfo:
    signed: bool             # a sector with at least one well-formed block
    image_size: int          # bytes covered by the signature (everything before the sector)
    blocks: list[BlockInfo] = field(default_factory=list)

    @property
    def key_digests(self) -> list[str]:
        return [b.key_digest for b in self.blocks]


# --- keys ---------------------------------------------------------------------------------

def generate_key(path: Path | None = None, scheme: str = "rsa3072") -> bytes:
    """A new RSA-3072 private key as PEM (PKCS#1, as espsecure writes it); written to
    `path` with mode 0600 when given, refusing to overwrite a file."""
    if scheme not in SCHEMES:
        raise SigningError(f"unknown scheme {scheme!r}; one of {', '.join(SCHEMES)}")
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    pem = key.private_bytes(serialization.Encoding.PEM,
                            serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    if path is not None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
    return pem


def _read_pem(key: bytes | str | Path) -> bytes:
    if isinstance(key, bytes):
        return key
    return Path(key).read_bytes()


def load_private_key(key: bytes | str | Path) -> rsa.RSAPrivateKey:
    """An RSA-3072 private key from PEM bytes or a PEM file."""
    try:
        k = serialization.load_pem_private_key(_read_pem(key), password=None)
    except (ValueError, TypeError) as exc:
        raise SigningError(f"not an unencrypted PEM private key: {exc}") from None
    if not isinstance(k, rsa.RSAPrivateKey) or k.key_size != KEY_BITS:
        raise SigningError("Secure Boot V2 signing needs an RSA-3072 private key")
    return k


def load_public_key(key: bytes | str | Path) -> rsa.RSAPublicKey:
    """The RSA-3072 public key of a PEM private or public key (bytes or file)."""
    pem = _read_pem(key)
    if b"PRIVATE KEY" in pem:
        return load_private_key(pem).public_key()
    try:
        k = serialization.load_pem_public_key(pem)
    except ValueError as exc:
        raise SigningError(f"not a PEM key: {exc}") from None
    if not isinstance(k, rsa.RSAPublicKey) or k.key_size != KEY_BITS:
        raise SigningError("Secure Boot V2 keys are RSA-3072")
    return k


def key_bytes(public_key: rsa.RSAPublicKey) -> bytes:
    """The 776 bytes a signature block carries for a key: n, e, rinv, m' (little-endian)."""
    nums = public_key.public_numbers()
    n = nums.n
    rinv = pow(2, 2 * KEY_BITS, n)                  # R^2 mod n for Montgomery, R = 2^3072
    mprime = (-pow(n, -1, 1 << 32)) & 0xFFFFFFFF    # -1/n mod 2^32
    return struct.pack("<384sI384sI", n.to_bytes(_LEN, "little"), nums.e,
                       rinv.to_bytes(_LEN, "little"), mprime)


def key_digest(key: bytes | str | Path | rsa.RSAPublicKey | rsa.RSAPrivateKey) -> str:
    """The key digest (64 hex) of a PEM key, file or key object: what
    `espsecure digest-sbv2-public-key` writes (as 32 raw bytes) and eFuses hold."""
    if isinstance(key, rsa.RSAPrivateKey):
        key = key.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        key = load_public_key(key)
    return hashlib.sha256(key_bytes(key)).hexdigest()


def normalize_digest(text: str) -> str:
    """A key digest as 64 lowercase hex; accepts espsecure's spaced form too."""
    d = text.replace(" ", "").replace(":", "").strip().lower()
    if len(d) != 64 or any(c not in "0123456789abcdef" for c in d):
        raise SigningError(f"a key digest is 64 hex characters, got {text!r}")
    return d


# --- sectors ------------------------------------------------------------------------------

def _valid_block(blk: bytes) -> bool:
    """Well-formed as espsecure judges it: magic, a known version, CRC."""
    return (len(blk) == BLOCK and blk[0] == MAGIC and blk[1] in (VERSION_RSA, VERSION_ECDSA)
            and zlib.crc32(blk[:_CRC_AT]) == struct.unpack_from("<I", blk, _CRC_AT)[0])


def _existing_blocks(data: bytes) -> list[bytes]:
    """The leading well-formed blocks of the file's last sector (none when unaligned)."""
    if len(data) < SECTOR or len(data) % SECTOR:
        return []
    sector = data[-SECTOR:]
    out = []
    for i in range(MAX_BLOCKS):
        blk = sector[i * BLOCK:(i + 1) * BLOCK]
        if not _valid_block(blk):
            break
        out.append(blk)
    return out


def _rsa_block(image_sha: bytes, key: rsa.RSAPrivateKey) -> bytes:
    sig = key.sign(image_sha, _PSS, utils.Prehashed(hashes.SHA256()))
    head = struct.pack("<BBxx32s", MAGIC, VERSION_RSA, image_sha)
    head += key_bytes(key.public_key()) + sig[::-1]
    return head + struct.pack("<I", zlib.crc32(head)) + bytes(16)


def sign(data: bytes, key: bytes | str | Path | rsa.RSAPrivateKey, append: bool = False,
         ) -> bytes:
    """`data` signed with `key`: padded to 4 KiB and followed by a new signature sector,
    or, with `append`, one more block in the sector `data` already has (up to three).

    Signing a file that already has a signature sector without `append` is refused
    (espsecure would sign the signed file as if it were the image)."""
    k = key if isinstance(key, rsa.RSAPrivateKey) else load_private_key(key)
    blocks = _existing_blocks(data)
    if blocks and not append:
        raise SigningError("the file is signed already: add a block with append, "
                           "or sign the unsigned image")
    if blocks:
        if len(blocks) >= MAX_BLOCKS:
            raise SigningError(f"the sector holds {MAX_BLOCKS} blocks already")
        image = data[:-SECTOR]
        sha = hashlib.sha256(image).digest()
        if any(b[4:36] != sha for b in blocks):
            raise SigningError("the existing signature blocks are for another image")
        if k.public_key().public_numbers() in {_block_numbers(b) for b in blocks}:
            raise SigningError("the file is signed with this key already")
    else:
        image = data + b"\xff" * (-len(data) % SECTOR)
        sha = hashlib.sha256(image).digest()
    blocks.append(_rsa_block(sha, k))
    sector = b"".join(blocks)
    return image + sector + b"\xff" * (SECTOR - len(sector))


def sign_file(src: Path, key: bytes | str | Path, out: Path, append: bool = False) -> SignatureInfo:
    """Sign the file `src` into `out` (may be the same path); the result's info."""
    signed = sign(Path(src).read_bytes(), key, append=append)
    Path(out).write_bytes(signed)
    return signature_info(signed)


def _block_numbers(blk: bytes) -> rsa.RSAPublicNumbers | None:
    if blk[1] != VERSION_RSA:
        return None
    return rsa.RSAPublicNumbers(struct.unpack_from("<I", blk, 420)[0],
                                int.from_bytes(blk[36:420], "little"))


def _key_sane(blk: bytes) -> bool:
    """The checks the device makes before trusting a key: a 3072-bit odd modulus, an odd
    e > 1, and m' = -1/n mod 2^32 (the value ESP-IDF's RSA peripheral needs)."""
    n_low = struct.unpack_from("<I", blk, 36)[0]
    e = struct.unpack_from("<I", blk, 420)[0]
    mprime = struct.unpack_from("<I", blk, 808)[0]
    return (blk[36 + _LEN - 1] & 0x80 != 0 and n_low & 1 == 1 and e >= 3 and e & 1 == 1
            and (n_low * mprime + 1) & 0xFFFFFFFF == 0)


def signature_info(data: bytes) -> SignatureInfo:
    """Whether `data` is signed and by which key digests (no trust decision)."""
    blocks = _existing_blocks(data)
    if not blocks:
        return SignatureInfo(signed=False, image_size=len(data))
    sha = hashlib.sha256(memoryview(data)[:-SECTOR]).digest()
    info = SignatureInfo(signed=True, image_size=len(data) - SECTOR)
    for i, blk in enumerate(blocks):
        rsa_block = blk[1] == VERSION_RSA
        # ECDSA blocks: espsecure's digest covers curve id and point (65 bytes for P-256).
        kd = hashlib.sha256(blk[_KEY] if rsa_block else blk[36:101]).hexdigest()
        info.blocks.append(BlockInfo(i, "rsa3072" if rsa_block else "ecdsa", kd,
                                     blk[4:36] == sha))
    return info


def verify(data: bytes, trusted: list[str] | None = None) -> tuple[bool, str]:
    """The host twin of the device check: `(True, key digest)` when a block verifies with
    a key whose digest is in `trusted` (any key when `trusted` is None), else `(False,
    reason)` with the device's reasons ("unsigned", "malformed signature block",
    "untrusted key", "bad signature")."""
    want = None if trusted is None else {normalize_digest(t) for t in trusted}
    if len(data) < SECTOR or len(data) % SECTOR:
        return False, "unsigned"
    sector = data[-SECTOR:]
    sha = hashlib.sha256(memoryview(data)[:-SECTOR]).digest()
    reasons = ("unsigned", "malformed signature block", "untrusted key", "bad signature")
    best = 0
    for i in range(MAX_BLOCKS):
        blk = sector[i * BLOCK:(i + 1) * BLOCK]
        if blk[0] != MAGIC:
            continue
        rank = 1
        if _valid_block(blk) and blk[1] == VERSION_RSA and _key_sane(blk):
            kd = hashlib.sha256(blk[_KEY]).hexdigest()
            rank = 2
            if want is None or kd in want:
                rank = 3
                nums = _block_numbers(blk)
                try:
                    if nums is not None and blk[4:36] == sha:
                        nums.public_key().verify(blk[812:1196][::-1], sha, _PSS,
                                                 utils.Prehashed(hashes.SHA256()))
                        return True, kd
                except (InvalidSignature, ValueError):
                    pass
        best = max(best, rank)
    return False, reasons[best]


# --- anti-rollback ------------------------------------------------------------------------

def _desc_check(image: bytes) -> None:
    if len(image) < 0x30 or image[0] != _IMAGE_MAGIC or struct.unpack_from(
            "<I", image, 0x20)[0] != _APP_DESC_MAGIC:
        raise SigningError("not an ESP32 app image with an app descriptor at 0x20")


def secure_version(image: bytes) -> int:
    """The app descriptor's `secure_version` of an ESP32 app image."""
    _desc_check(image)
    return struct.unpack_from("<I", image, _SECURE_VERSION_AT)[0]


def set_secure_version(image: bytes, version: int) -> bytes:
    """The unsigned ESP32 app image with `secure_version` set; its checksum byte and
    appended SHA-256 are updated so the image stays valid. Set it before signing."""
    _desc_check(image)
    if not 0 <= version <= 0xFFFFFFFF:
        raise SigningError("secure_version is a 32-bit unsigned number")
    if signature_info(image).signed:
        raise SigningError("set secure_version before signing: the signature covers it")
    out = bytearray(image)
    pos = 24
    for _ in range(image[1]):
        if pos + 8 > len(out):
            raise SigningError("truncated segment header")
        pos += 8 + struct.unpack_from("<I", out, pos + 4)[0]
    pos += 16 - pos % 16                           # the checksum ends this 16-byte line
    if pos > len(out) or pos < 0x28:
        raise SigningError("segments run past the end of the image")
    old = bytes(out[_SECURE_VERSION_AT:_SECURE_VERSION_AT + 4])
    struct.pack_into("<I", out, _SECURE_VERSION_AT, version)
    for a, b in zip(old, out[_SECURE_VERSION_AT:_SECURE_VERSION_AT + 4], strict=True):
        out[pos - 1] ^= a ^ b                      # the checksum is an XOR of segment data
    if out[23] == 1:
        if pos + 32 > len(out):
            raise SigningError("the appended SHA-256 is missing")
        out[pos:pos + 32] = hashlib.sha256(out[:pos]).digest()
    return bytes(out)
