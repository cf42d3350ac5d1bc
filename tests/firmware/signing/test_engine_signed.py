"""Signed updates end to end on the real unix port: the engine, a real HTTP server,
the simulated flash. Every refusal is step -3 with its reason, and the board still
boots what it ran before (the boot selection never changes)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from fota_host.images import esp_image, signing
from fota_host.images import synthetic as images
from fota_host.sim import flash as simflash
from fota_host.sim import mprun
from fota_host.sim import update as sim
from helpers import wait_for

SIZE = 200_000 - 200_000 % 16
# RSA-3072 on the 64-bit unix port wants a few KiB more than a plain update's 52K.
HEAP = "96K"


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, bytes]:
    root = tmp_path_factory.mktemp("keys")
    return {name: signing.generate_key(root / f"{name}.pem") for name in ("a", "b", "c")}


def digest(key: bytes) -> str:
    return signing.key_digest(key)


def new_flash(tmp_path: Path, board: str = "esp32", name: str = "flash") -> Path:
    flash = tmp_path / name
    sim.prepare(flash, board, "1.0.0")
    return flash


def image(version: str = "2.0.0", board: str = "esp32", secure_version: int | None = None,
          size: int | None = SIZE) -> bytes:
    return images.sim_image(board, version, size if board == "esp32" else None,
                            secure_version=secure_version)


def update(flash: Path, served, name: str, data: bytes, trust: list[str], board="esp32",
           **kw) -> dict:
    img = served.add(name, data)
    kw.setdefault("heap", HEAP)
    return sim.update(flash, board, img["url"], img["md5"], img["size"], trust=trust, **kw)


def unchanged(flash: Path) -> bool:
    st = simflash.boot(flash)
    return st["version"] == "1.0.0" and not st["pending"]


def flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:]


def resign_crc(data: bytes, block: int = 0) -> bytes:
    """The sector's block CRC made right again (what an attacker would do)."""
    import zlib

    base = len(data) - 4096 + block * 1216
    out = bytearray(data)
    struct.pack_into("<I", out, base + 1196, zlib.crc32(bytes(out[base:base + 1196])))
    return bytes(out)


@pytest.mark.parametrize("board", ["esp32", "pico_w"])
def test_signed_image_is_accepted_by_a_device_that_trusts_the_key(tmp_path, served, keys,
                                                                  board):
    flash = new_flash(tmp_path, board)
    signed = signing.sign(image(board=board), keys["a"])
    report = update(flash, served, "v2.bin", signed, [digest(keys["a"])], board)
    assert report["ok"], report
    st = simflash.boot(flash)
    assert (st["version"], st["pending"]) == ("2.0.0", True)


def test_attacker_images_are_refused_with_their_reason_and_boot_stays(tmp_path, served, keys):
    """Each file comes with a correct MD5 in the notice: only the signature tells."""
    plain = image()
    signed = signing.sign(plain, keys["a"])
    sig_at = len(signed) - 4096 + 812 + 100          # inside block 0's RSA signature
    cases = {
        "unsigned": plain,
        "untrusted key": signing.sign(plain, keys["c"]),
        "bad signature": resign_crc(flip(signed, sig_at)),
        "malformed signature block": flip(signed, sig_at),
    }
    for i, (reason, data) in enumerate(cases.items()):
        flash = new_flash(tmp_path, name=f"f{i}")
        report = update(flash, served, f"evil{i}.bin", data, [digest(keys["a"])])
        assert (report["step"], report["reason"]) == (-3, reason), report
        assert unchanged(flash)
    # Image bytes changed after signing (past the header, so the image still parses):
    flash = new_flash(tmp_path, name="tampered")
    report = update(flash, served, "tampered.bin", flip(signed, 5000), [digest(keys["a"])])
    assert (report["step"], report["reason"]) == (-3, "bad signature"), report
    assert unchanged(flash)


def test_allow_unsigned_takes_unsigned_images_but_never_a_bad_signature(tmp_path, served,
                                                                       keys):
    trust = [digest(keys["a"])]
    flash = new_flash(tmp_path, name="u")
    assert update(flash, served, "u.bin", image(), trust, allow_unsigned=True)["ok"]
    flash = new_flash(tmp_path, name="c")
    report = update(flash, served, "c.bin", signing.sign(image(), keys["c"]), trust,
                    allow_unsigned=True)
    assert (report["step"], report["reason"]) == (-3, "untrusted key")
    assert unchanged(flash)


def test_without_trusted_keys_signed_and_unsigned_images_both_install(tmp_path, served, keys):
    for i, data in enumerate([image(), signing.sign(image(), keys["c"])]):
        flash = new_flash(tmp_path, name=f"f{i}")
        assert update(flash, served, f"i{i}.bin", data, [])["ok"]


def test_key_rotation_blocks_from_two_keys(tmp_path, served, keys):
    """Old key a and new key b both sign; a device trusting either takes the image."""
    both = signing.sign(signing.sign(image(), keys["a"]), keys["b"], append=True)
    for i, trusted in enumerate([["b"], ["a"], ["c", "b"]]):
        flash = new_flash(tmp_path, name=f"f{i}")
        report = update(flash, served, f"r{i}.bin", both, [digest(keys[k]) for k in trusted])
        assert report["ok"], (trusted, report)
    flash = new_flash(tmp_path, name="none")
    report = update(flash, served, "r.bin", both, [digest(keys["c"])])
    assert (report["step"], report["reason"]) == (-3, "untrusted key")


@pytest.mark.parametrize("board", ["esp32", "pico_w"])
def test_downgrade_refused_equal_secure_version_accepted(tmp_path, served, keys, board):
    trust = [digest(keys["a"])]
    flash = new_flash(tmp_path, board)

    def signed(version: str, sv: int) -> bytes:
        return signing.sign(image(version, board, secure_version=sv), keys["a"])

    assert update(flash, served, "v2.bin", signed("2.0.0", 2), trust, board)["ok"]
    simflash.boot(flash)
    simflash.confirm(flash)
    report = update(flash, served, "v3.bin", signed("3.0.0", 1), trust, board)
    assert report["step"] == -3 and report["reason"].startswith("downgrade"), report
    st = simflash.boot(flash)
    assert (st["version"], st["pending"]) == ("2.0.0", False)
    report = update(flash, served, "v4.bin", signed("4.0.0", 2), trust, board)
    assert report["ok"], report
    assert simflash.boot(flash)["version"] == "4.0.0"


def test_the_kept_minimum_only_grows_and_refuses_older_images(tmp_path, served, keys):
    """After an update from an image with secure_version 3, the device keeps 3 as its
    minimum: an image with 2 is refused even where the running image says less."""
    trust = [digest(keys["a"])]
    flash = new_flash(tmp_path)
    (flash / "fota_secure_version").write_text("3")
    data = signing.sign(image("2.0.0", secure_version=2), keys["a"])
    report = update(flash, served, "v2.bin", data, trust)
    assert report["step"] == -3 and report["reason"].startswith("downgrade"), report
    assert unchanged(flash)
    data = signing.sign(image("3.0.0", secure_version=3), keys["a"])
    assert update(flash, served, "v3.bin", data, trust)["ok"]
    assert (flash / "fota_secure_version").read_text() == "3"


def journal_size(flash: Path) -> int:
    try:
        return (flash / "fota_journal.json").stat().st_size
    except OSError:
        return 0


def _cut_then_resume(tmp_path, served, data: bytes, trust: list[str]) -> dict:
    flash = new_flash(tmp_path)
    img = served.add("v2.bin", data)
    served.server.faults.delay_per_chunk = 0.02
    args = ["-m", "fota_sim", "update", "esp32", img["url"], img["md5"], str(img["size"]),
            "--task", "7"]
    for d in trust:
        args += ["--trust", d]
    proc = mprun.popen(args, heap=HEAP, flash=flash, cwd=flash)
    # Cut once the journal holds a checkpoint (its 16-byte header and a 16-byte record):
    # the file exists from the start, and a fixed 0.3 s after that was not always a
    # checkpoint on a loaded machine (then nothing to resume from).
    wait_for(lambda: journal_size(flash) >= 32, timeout=60, what="a journal checkpoint")
    proc.kill()                                     # SIGKILL: a power cut
    proc.wait()
    assert unchanged(flash)
    served.server.faults.delay_per_chunk = 0.0
    report = sim.update(flash, "esp32", img["url"], img["md5"], img["size"], task=7,
                        trust=trust, heap=HEAP)
    ranges = [r["range"] for r in served.server.stats.requests if r["range"]]
    assert ranges and int(ranges[-1][6:-1]) > 0, "the second run resumed"
    report["flash"] = flash
    return report


def test_power_cut_during_a_signed_update_then_resume_checks_the_signature(tmp_path, served,
                                                                           keys):
    big = esp_image.build_sim_image("2.0.0", 1_200_000)
    report = _cut_then_resume(tmp_path / "good", served, signing.sign(big, keys["a"]),
                              [digest(keys["a"])])
    assert report["ok"], report
    assert simflash.boot(report["flash"])["version"] == "2.0.0"


def test_power_cut_then_resume_of_an_untrusted_image_is_still_refused(tmp_path, served, keys):
    big = esp_image.build_sim_image("2.0.0", 1_200_000)
    report = _cut_then_resume(tmp_path / "evil", served, signing.sign(big, keys["c"]),
                              [digest(keys["a"])])
    assert (report["step"], report["reason"]) == (-3, "untrusted key"), report
    assert unchanged(report["flash"])


def test_fota_sim_update_trust_takes_digests_and_key_files(tmp_path, served, keys):
    """The CLI: `fota sim update ... --trust DIGEST|KEY.pem` (repeatable)."""
    import json

    from click.testing import CliRunner
    from fota_host.cli import cli

    (tmp_path / "b.pem").write_bytes(keys["b"])
    img = served.add("v2.bin", signing.sign(image(), keys["a"]))
    base = ["sim", "update", img["url"], "--md5", img["md5"], "--size", str(img["size"]),
            "--heap", HEAP]
    run = CliRunner().invoke
    out = run(cli, [*base, "--flash", str(tmp_path / "f1"), "--trust", str(tmp_path / "b.pem")])
    assert out.exit_code == 1 and json.loads(out.output)["reason"] == "untrusted key", out.output
    out = run(cli, [*base, "--flash", str(tmp_path / "f2"), "--trust", str(tmp_path / "b.pem"),
                    "--trust", digest(keys["a"])])
    assert out.exit_code == 0 and json.loads(out.output)["ok"], out.output
    out = run(cli, [*base, "--flash", str(tmp_path / "f3"), "--trust", "nothex"])
    assert out.exit_code != 0 and "--trust" in out.output
