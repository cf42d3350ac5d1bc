"""Secure Boot V2 signatures: the device check (firmware/fota/sbv2.py on the real unix port)
and the host signer (fota_host.images.signing), cross-checked both ways with Espressif's
own `espsecure`.

Device cases run in one MicroPython process per test (mp_verify.py): each case is a
file streamed the way the engine streams it, or a raw sector with the image digest.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa, utils
from fota_host.images import signing
from fota_host.paths import firmware_dir, micropython_bin

HERE = Path(__file__).parent
REPO = HERE.parents[2]
SECTOR, BLOCK = 4096, 1216
REASONS = {"unsigned", "malformed signature block", "untrusted key", "bad signature"}


def espsecure(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "espsecure", *map(str, args)],
                          capture_output=True, text=True, timeout=120)
    if check and proc.returncode:
        raise AssertionError(f"espsecure {args} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def device(cases: list[dict], tmp: Path) -> list[dict]:
    """Run the cases through sbv2 on the unix port; one result dict per case, in order."""
    for i, case in enumerate(cases):
        case["id"] = i
    spec = tmp / f"cases-{random.random()}.json"
    spec.write_text(json.dumps(cases))
    proc = subprocess.run([micropython_bin(), str(HERE / "mp_verify.py"), str(spec)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MICROPYPATH": str(firmware_dir())})
    assert proc.returncode == 0, proc.stderr
    assert "Warning" not in proc.stdout + proc.stderr
    out = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [o["id"] for o in out] == list(range(len(cases))), "a case was lost"
    return out


def _crc_fixed(blk: bytearray) -> bytearray:
    struct.pack_into("<I", blk, 1196, zlib.crc32(bytes(blk[:1196])))
    return blk


class Kit:
    """Keys (one made by espsecure, two by the host signer), an image, files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.k1 = root / "k1.pem"
        espsecure("generate-signing-key", "--version", "2", "--scheme", "rsa3072", self.k1)
        self.k2 = root / "k2.pem"
        signing.generate_key(self.k2)
        self.k3 = root / "k3.pem"
        signing.generate_key(self.k3)
        self.d1, self.d2, self.d3 = (self.esp_digest(k) for k in (self.k1, self.k2, self.k3))
        rnd = random.Random(14)
        self.image = bytes(rnd.getrandbits(8) for _ in range(10_000))   # not 4 KiB aligned
        self.img = self.write("img.bin", self.image)

    def esp_digest(self, key: Path) -> str:
        out = self.root / (key.name + ".digest")
        espsecure("digest-sbv2-public-key", "--keyfile", key, "-o", out)
        return out.read_bytes().hex()

    def write(self, name: str, data: bytes) -> Path:
        path = self.root / name
        path.write_bytes(data)
        return path

    def esp_signed(self, name: str, key: Path, src: Path | None = None,
                   append: bool = False) -> Path:
        out = self.root / name
        espsecure("sign-data", "--version", "2", "--keyfile", key, "-o", out,
                  *(["--append-signatures"] if append else []), src or self.img)
        return out


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Kit:
    return Kit(tmp_path_factory.mktemp("sbv2"))


def test_espsecure_signed_image_passes_the_device_check(kit: Kit) -> None:
    signed = kit.esp_signed("esp.bin", kit.k1)
    res = device([{"file": str(signed), "trusted": [kit.d1]},
                  {"file": str(signed), "trusted": ["raw:" + kit.d1]},
                  {"file": str(signed), "trusted": [kit.d1.upper()]},
                  {"file": str(signed), "trusted": [kit.d3]},
                  {"file": str(signed), "trusted": []}], kit.root)
    assert [r["reason"] for r in res] == ["ok", "ok", "ok", "untrusted key", "untrusted key"]
    assert signing.verify(signed.read_bytes(), [kit.d1]) == (True, kit.d1)


def test_host_signed_image_passes_espsecure_and_the_device(kit: Kit) -> None:
    signed = kit.write("ours.bin", signing.sign(kit.image, kit.k2))
    out = espsecure("verify-signature", "--version", "2", "--keyfile", kit.k2, signed)
    assert "verification successful" in out.stdout
    other = espsecure("verify-signature", "--version", "2", "--keyfile", kit.k1, signed,
                      check=False)
    assert other.returncode != 0
    res = device([{"file": str(signed), "trusted": [kit.d2]}], kit.root)
    assert res[0] == {"id": 0, "ok": True, "reason": "ok"}


def test_host_sector_has_espsecure_structure_byte_for_byte(kit: Kit) -> None:
    """Same key, same image: everything but the (randomly salted) signature and its CRC
    is identical to espsecure's output."""
    theirs = kit.esp_signed("esp-k1.bin", kit.k1).read_bytes()
    ours = signing.sign(kit.image, kit.k1)
    assert len(ours) == len(theirs) == 16384
    assert ours[:-SECTOR] == theirs[:-SECTOR]            # image + 0xFF padding
    so, st = ours[-SECTOR:], theirs[-SECTOR:]
    assert so[:812] == st[:812]                          # magic, version, digest, key
    assert so[1200:] == st[1200:]                        # zero pad, then 0xFF to the end
    assert so[812:1196] != st[812:1196]                  # PSS salt is random
    assert struct.unpack_from("<I", so, 1196)[0] == zlib.crc32(so[:1196])


def test_key_digests_agree_with_espsecure(kit: Kit) -> None:
    both = signing.sign(kit.esp_signed("esp-k1b.bin", kit.k1).read_bytes(), kit.k2,
                        append=True)
    path = kit.write("both.bin", both)
    assert signing.key_digest(kit.k1) == kit.d1
    assert signing.key_digest(kit.k2) == kit.d2
    info = signing.signature_info(both)
    assert info.signed and info.key_digests == [kit.d1, kit.d2]
    assert all(b.digest_ok for b in info.blocks)
    printed = espsecure("signature-info-v2", path).stdout
    found = re.findall(r"Public key digest for block (\d): ((?:[0-9a-f]{2} ?){32})", printed)
    assert [(int(i), d.replace(" ", "")) for i, d in found] == [(0, kit.d1), (1, kit.d2)]
    res = device([{"digest": str(path), "block": 0}, {"digest": str(path), "block": 1}],
                 kit.root)
    assert [r["digest"] for r in res] == [kit.d1, kit.d2]
    assert not signing.signature_info(kit.image).signed


def test_key_rotation_any_trusted_block_passes(kit: Kit) -> None:
    """Old key by espsecure, new key appended by the host signer, a third appended by
    espsecure: a device trusting any one of them accepts, one trusting none refuses."""
    old_new = kit.write("rot.bin", signing.sign(kit.esp_signed("rot0.bin", kit.k1)
                                                .read_bytes(), kit.k2, append=True))
    for key in (kit.k1, kit.k2):
        espsecure("verify-signature", "--version", "2", "--keyfile", key, old_new)
    k4 = kit.root / "k4.pem"
    signing.generate_key(k4)
    d4 = signing.key_digest(k4)
    three = kit.esp_signed("rot3.bin", k4, src=old_new, append=True)
    res = device([{"file": str(old_new), "trusted": [kit.d2]},
                  {"file": str(old_new), "trusted": [kit.d1]},
                  {"file": str(old_new), "trusted": [kit.d3]},
                  {"file": str(three), "trusted": [kit.d3, d4]},
                  {"file": str(three), "trusted": [kit.d3]}], kit.root)
    assert [r["reason"] for r in res] == ["ok", "ok", "untrusted key", "ok", "untrusted key"]
    with pytest.raises(signing.SigningError, match="3 blocks"):
        signing.sign(three.read_bytes(), kit.k3, append=True)
    with pytest.raises(signing.SigningError, match="signed already"):
        signing.sign(old_new.read_bytes(), kit.k3)
    with pytest.raises(signing.SigningError, match="this key already"):
        signing.sign(old_new.read_bytes(), kit.k2, append=True)


def test_attacker_images_are_refused_with_their_reason(kit: Kit) -> None:
    good = signing.sign(kit.image, kit.k1)
    flipped_image = bytearray(good)
    flipped_image[5000] ^= 0x01
    sig_flipped = bytearray(good)
    sig_flipped[-SECTOR + 900] ^= 0x40
    sig_flipped_crc = bytearray(sig_flipped)
    sig_flipped_crc[-SECTOR:-SECTOR + BLOCK] = _crc_fixed(
        bytearray(sig_flipped[-SECTOR:-SECTOR + BLOCK]))
    aligned_unsigned = bytes(random.Random(2).getrandbits(8) for _ in range(8192))
    cases = {
        "unsigned": (kit.image, [kit.d1]),
        "unsigned, 4 KiB aligned": (aligned_unsigned, [kit.d1]),
        "untrusted key": (signing.sign(kit.image, kit.k3), [kit.d1, kit.d2]),
        "image bytes flipped after signing": (bytes(flipped_image), [kit.d1]),
        "signature bytes flipped": (bytes(sig_flipped_crc), [kit.d1]),
        "signature bytes flipped, CRC left": (bytes(sig_flipped), [kit.d1]),
    }
    expect = ["unsigned", "unsigned", "untrusted key", "bad signature", "bad signature",
              "malformed signature block"]
    paths = {name: kit.write(f"attack-{i}.bin", data)
             for i, (name, (data, _)) in enumerate(cases.items())}
    res = device([{"file": str(paths[n]), "trusted": t} for n, (_, t) in cases.items()],
                 kit.root)
    got = {n: r["reason"] for n, r in zip(cases, res, strict=True)}
    assert got == dict(zip(cases, expect, strict=True))
    host = {n: signing.verify(d, t)[1] for n, (d, t) in cases.items()}
    assert host == got, "the host twin must give the device's reasons"
    espsecure_rc = espsecure("verify-signature", "--version", "2", "--keyfile", kit.k1,
                             paths["image bytes flipped after signing"], check=False)
    assert espsecure_rc.returncode != 0


def _key_block(key: rsa.RSAPrivateKey, image_sha: bytes, n_bytes: int = 384,
               signed_sha: bytes | None = None) -> bytearray:
    """A block for any RSA key size, zero-extended into the 384-byte fields (hostile),
    whose signature may be over another digest than the one in its digest field."""
    nums = key.public_key().public_numbers()
    sig = key.sign(signed_sha or image_sha, signing._PSS, utils.Prehashed(hashes.SHA256()))
    mprime = (-pow(nums.n, -1, 1 << 32)) & 0xFFFFFFFF
    blk = bytearray(struct.pack("<BBxx32s384sI384sI384s", 0xE7, 2, image_sha,
                                nums.n.to_bytes(n_bytes, "little"), nums.e,
                                pow(2, 6144, nums.n).to_bytes(384, "little"), mprime,
                                sig[::-1]))
    blk += bytes(20)
    return _crc_fixed(blk)


def test_hostile_sectors_give_a_reason_and_never_crash(kit: Kit) -> None:
    padded = kit.image + b"\xff" * (-len(kit.image) % SECTOR)
    sha = hashlib.sha256(padded).digest()
    good = bytearray(signing.sign(kit.image, kit.k1)[-SECTOR:])
    blk = good[:BLOCK]
    blk3 = bytearray(signing.sign(kit.image, kit.k3)[-SECTOR:BLOCK - SECTOR])
    ff = b"\xff" * SECTOR

    def sector(*blocks: bytes) -> bytes:
        s = b"".join(blocks)
        return s + ff[len(s):]

    def patched(at: int, data: bytes, crc: bool = True) -> bytes:
        b = bytearray(blk)
        b[at:at + len(data)] = data
        return bytes(_crc_fixed(b) if crc else b)

    def key_digest(b: bytes) -> str:
        return hashlib.sha256(b[36:812]).hexdigest()

    small = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    short_key = bytes(_key_block(small, sha))
    short_sig = bytearray(blk)
    short_sig[812:1196] = bytes(blk[812:1196])[:256] + bytes(128)
    bad_crc = bytes(blk[:1196]) + struct.pack("<I", ~zlib.crc32(bytes(blk[:1196])) & 0xFFFFFFFF) \
        + bytes(blk[1200:])
    replayed = bytes(_key_block(signing.load_private_key(kit.k1), sha,
                                signed_sha=hashlib.sha256(b"another image").digest()))
    zero_n = patched(36, bytes(384))
    e_one = patched(420, struct.pack("<I", 1))
    cases: list[tuple[str, bytes, list[str], str]] = [
        ("bad CRC", bad_crc, [kit.d1], "malformed signature block"),
        ("wrong magic: no signature block", patched(0, b"\xe6"), [kit.d1], "unsigned"),
        ("version 1", patched(1, b"\x01"), [kit.d1], "malformed signature block"),
        ("ECDSA block", patched(1, b"\x03"), [kit.d1], "malformed signature block"),
        ("all 0xFF", ff, [kit.d1], "unsigned"),
        ("all zero", bytes(SECTOR), [kit.d1], "unsigned"),
        ("truncated in the key", bytes(good[:600]), [kit.d1], "malformed signature block"),
        ("truncated in the signature", bytes(good[:1000]), [kit.d1],
         "malformed signature block"),
        ("empty", b"", [kit.d1], "unsigned"),
        ("modulus 0, trusted", zero_n, [key_digest(zero_n)], "malformed signature block"),
        ("e = 1, trusted", e_one, [key_digest(e_one)], "malformed signature block"),
        ("e = 0", patched(420, bytes(4)), [kit.d1], "malformed signature block"),
        ("e even", patched(420, struct.pack("<I", 65536)), [kit.d1],
         "malformed signature block"),
        ("modulus even", patched(36, bytes([blk[36] & 0xFE])), [kit.d1],
         "malformed signature block"),
        ("m' wrong", patched(808, b"\x01\x00\x00\x00"), [kit.d1], "malformed signature block"),
        ("2048-bit key, trusted", short_key, [key_digest(short_key)],
         "malformed signature block"),
        ("2048-bit-long signature", bytes(_crc_fixed(short_sig)), [kit.d1], "bad signature"),
        ("signature >= modulus", patched(812, b"\xff" * 384), [kit.d1], "bad signature"),
        ("signature 0", patched(812, bytes(384)), [kit.d1], "bad signature"),
        ("signature 1", patched(812, b"\x01" + bytes(383)), [kit.d1], "bad signature"),
        ("image digest field changed", patched(4, bytes(32)), [kit.d1], "bad signature"),
        ("trusted key's signature of another image", replayed, [kit.d1], "bad signature"),
        ("garbage after the magic", b"\xe7" + random.Random(3).randbytes(SECTOR - 1), [kit.d1],
         "malformed signature block"),
        ("malformed, then untrusted", sector(bad_crc, blk3),
         [kit.d1], "untrusted key"),
        ("untrusted, then trusted with a bad signature",
         sector(blk3, patched(812, bytes(384))), [kit.d1], "bad signature"),
        ("bad CRC, then good", sector(bad_crc, blk), [kit.d1], "ok"),
        ("good in the third slot", sector(ff[:BLOCK], ff[:BLOCK], blk), [kit.d1], "ok"),
        ("zero padding changed (not covered)", patched(1205, b"\x55", crc=False), [kit.d1],
         "ok"),
    ]
    specs = []
    for i, (_, data, trusted, _) in enumerate(cases):
        path = kit.write(f"hostile-{i}.bin", data)
        specs.append({"sector": str(path), "sha": sha.hex(), "trusted": trusted})
    res = device(specs, kit.root)
    got = {name: r["reason"] for (name, *_), r in zip(cases, res, strict=True)}
    assert got == {name: want for name, _, _, want in cases}
    # The host twin agrees wherever the sector is whole (it reads files).
    for name, data, trusted, want in cases:
        if len(data) == SECTOR:
            ok, why = signing.verify(padded + data, trusted)
            assert (why if not ok else "ok") == want, name


def test_any_single_byte_change_is_refused(kit: Kit) -> None:
    """300 random one-byte changes of a good block, with the CRC made to match: none
    passes, each gets a reason, the process survives them all."""
    padded = kit.image + b"\xff" * (-len(kit.image) % SECTOR)
    sha = hashlib.sha256(padded).digest()
    good = bytearray(signing.sign(kit.image, kit.k1)[-SECTOR:])
    rnd = random.Random(1414)
    specs = []
    for i in range(300):
        pos = rnd.choice([p for p in range(1, 1196) if p not in (2, 3)])  # 2, 3: padding
        s = bytearray(good)
        s[pos] ^= rnd.randrange(1, 256)
        blk = _crc_fixed(s[:BLOCK])
        s[:BLOCK] = blk
        path = kit.write(f"fuzz-{i}.bin", bytes(s))
        specs.append({"sector": str(path), "sha": sha.hex(), "trusted": [kit.d1]})
    res = device(specs, kit.root)
    assert all(not r["ok"] and r["reason"] in REASONS for r in res)
    assert {r["reason"] for r in res} >= {"untrusted key", "bad signature",
                                           "malformed signature block"}


def test_verification_fits_a_small_heap(kit: Kit, tmp_path: Path) -> None:
    """On the 64-bit unix port, as .mpy: verification needs at most 8 KiB of heap beyond
    a program that hashes the file and holds the 4 KiB block buffer (measured ~5-6.5 KiB;
    pow() of 3072-bit numbers is most of it)."""
    sys.path.insert(0, str(REPO / "bench"))
    try:
        import bench_signature
    finally:
        sys.path.remove(str(REPO / "bench"))
    signed, digest = bench_signature._prepare(tmp_path)
    base = bench_signature.min_heap(tmp_path, "base", signed, digest)
    need = bench_signature.min_heap(tmp_path, "verify", signed, digest)
    assert 0 < need - base <= 8 * 1024, (base, need)


def test_sector_offset(kit: Kit) -> None:
    script = ("from fota import sbv2\n"
              "print([sbv2.sector_offset(n) for n in (0, 4095, 4096, 8192, 10000, 16384)])")
    proc = subprocess.run([micropython_bin(), "-c", script], capture_output=True, text=True,
                          env={**os.environ, "MICROPYPATH": str(firmware_dir())}, timeout=60)
    assert proc.stdout.strip() == "[-1, -1, 0, 4096, -1, 12288]"
