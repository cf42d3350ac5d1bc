"""ESP-IDF Secure Boot V2 signatures (RSA-3072, RSA-PSS with SHA-256), checked on the device.

A signed file is the image padded with 0xFF to a 4 KiB boundary, then one 4 KiB
signature sector (what `espsecure sign-data --version 2` writes). The sector holds
up to three 1216-byte blocks, the rest is 0xFF. Each RSA block, little-endian:

    0     magic 0xE7, version 0x02, 2 bytes padding
    4     SHA-256 of everything before the sector
    36    public key: n (384 bytes), e (u32), rinv (384 bytes), m' (u32)
    812   RSA-PSS signature (384 bytes)
    1196  CRC-32 of bytes 0..1195, then 16 bytes of zero padding

A key is known by the SHA-256 of its 776 key bytes (offset 36..811): what
`espsecure digest-sbv2-public-key` writes and what a chip's eFuses hold.
`verify()` passes when any block verifies with a trusted key (key rotation).

The engine hashes everything before `sector_offset(size)` while it streams (the
sector is the file's last 4 KiB block), then reads the sector back into its block
buffer and calls `verify(buf, sha.digest(), trusted)`. Only n and e enter the
arithmetic: rinv and m' are the ESP32 RSA peripheral's precomputed values, and the
key digest covers them. ECDSA blocks (version 0x03) are not supported here.
"""
from micropython import const

SECTOR = const(4096)
BLOCK = const(1216)
_MAGIC = const(0xE7)
_RSA = const(0x02)
_KEY = const(36)
_E = const(420)
_MPRIME = const(808)
_SIG = const(812)
_CRC = const(1196)
_LEN = const(384)            # RSA-3072: modulus, signature and encoded message bytes
_DB = const(351)             # _LEN - 32 - 1: the masked data block of EMSA-PSS
_PS = const(318)             # _DB - 32 - 1: zero bytes before the 0x01 and the salt

# Outcomes of one block, from worst to best; verify() reports the best one seen.
_REASONS = ("unsigned", "malformed signature block", "untrusted key", "bad signature")
_OK = const(4)


def sector_offset(size):
    """Where the signature sector of a `size`-byte file starts, or -1 when it can't have one."""
    if size < SECTOR or size % SECTOR:
        return -1
    return size - SECTOR


def key_digest(block):
    """SHA-256 (32 bytes) of a block's public key, as eFuses and `espsecure` define it."""
    import hashlib

    return hashlib.sha256(memoryview(block)[_KEY:_SIG]).digest()


def verify(sector, image_sha256, trusted):
    """`(True, "ok")` when a block of `sector` (the 4 KiB sector: bytes, bytearray or
    memoryview, e.g. the engine's block buffer) is a valid signature of the image with
    SHA-256 `image_sha256` (32 bytes) by a key in `trusted` (key digests: 32 bytes or
    64 hex characters); else `(False, reason)`, the reason from the best block:
    "unsigned" (no block), "malformed signature block", "untrusted key" or "bad
    signature". Never raises on hostile input (MemoryError aside: free the download's
    socket and buffers first, RSA-3072 arithmetic needs ~4-6 KiB of heap for a moment)."""
    best, keys = candidates(sector, image_sha256, trusted)
    return check(keys, image_sha256, best)


def candidates(sector, image_sha256, trusted):
    """The part of verify() that reads the sector: (best outcome code, [(n, s, e)] of
    the well-formed blocks by trusted keys over this image). The sector's buffer may
    be freed after it, so the RSA arithmetic of check() finds the heap in one piece."""
    best = 0
    keys = []
    try:
        mv = memoryview(sector)
        if len(image_sha256) != 32:
            raise ValueError
        for i in range(3):
            blk = mv[i * BLOCK:(i + 1) * BLOCK]
            if not len(blk):
                break
            r = _block(blk, image_sha256, trusted)
            if isinstance(r, tuple):
                keys.append(r)
                r = 3
            if r > best:
                best = r
    except MemoryError:
        raise
    except Exception:  # noqa: BLE001 - a hostile sector is a refusal, never a crash
        best = 1 if best < 1 else best
    return best, keys


def check(keys, image_sha256, best=3):
    """The RSA-PSS part of verify(): `(True, "ok")` when one of `keys` (from
    candidates()) verifies, else `(False, reason)`."""
    for n, s, e in keys:
        if _pss(n, s, e, image_sha256):
            return True, "ok"
    return False, _REASONS[best]


def _block(blk, mhash, trusted):
    """An outcome code, or (n, s, e) when only the RSA-PSS check is left."""
    import binascii
    import struct

    if blk[0] != _MAGIC:
        return 0                         # an empty slot (0xFF) or no sector at all
    if len(blk) < BLOCK or blk[1] != _RSA:
        return 1
    if binascii.crc32(blk[:_CRC]) != struct.unpack_from("<I", blk, _CRC)[0]:
        return 1
    e = struct.unpack_from("<I", blk, _E)[0]
    # A 3072-bit odd modulus, an odd e > 1, and m' = -1/n mod 2^32 as ESP-IDF's
    # RSA peripheral needs it: anything else is not a key espsecure would write.
    if not blk[_KEY + _LEN - 1] & 0x80 or not blk[_KEY] & 1 or e < 3 or not e & 1:
        return 1
    if (struct.unpack_from("<I", blk, _KEY)[0] * struct.unpack_from("<I", blk, _MPRIME)[0]
            + 1) & 0xFFFFFFFF:
        return 1
    if not _trusted(key_digest(blk), trusted):
        return 2
    for i in range(32):
        if blk[4 + i] != mhash[i]:
            return 3
    n = int.from_bytes(blk[_KEY:_KEY + _LEN], "little")
    s = int.from_bytes(blk[_SIG:_SIG + _LEN], "little")
    return 3 if s >= n else (n, s, e)


def _trusted(digest, trusted):
    if not trusted:
        return False
    import binascii

    hexed = binascii.hexlify(digest).decode()
    for t in trusted:
        if isinstance(t, str):
            if t.lower() == hexed:
                return True
        elif t == digest:
            return True
    return False


def _pss(n, s, e, mhash):
    """EMSA-PSS-VERIFY (RFC 8017 9.1.2) for a 3072-bit key, MGF1-SHA-256, 32-byte salt."""
    import hashlib

    m = pow(s, e, n)
    n = s = None
    em = m.to_bytes(_LEN, "big")
    m = None
    # emBits is 3071: the top bit of the encoded message must be clear.
    if em[_LEN - 1] != 0xBC or em[0] & 0x80:
        return False
    h = em[_DB:_DB + 32]
    final = hashlib.sha256(bytes(8))
    final.update(mhash)
    ctr = bytearray(4)
    salt = bytearray(32)
    p = 0
    while p < _DB:
        ctr[3] = p >> 5
        mgf = hashlib.sha256(h)
        mgf.update(ctr)
        mask = mgf.digest()
        for j in range(32):
            if p >= _DB:
                break
            b = em[p] ^ mask[j]
            if p == 0:
                b &= 0x7F
            if p < _PS:
                if b:
                    return False
            elif p == _PS:
                if b != 1:
                    return False
            else:
                salt[p - _PS - 1] = b
            p += 1
    final.update(salt)
    return final.digest() == h

