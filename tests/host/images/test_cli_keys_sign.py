"""`fota keys generate|digest`, `fota sign` and `fota device provision --trust`, through the
real command, checked against Espressif's own espsecure."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from fota_cli import fota, fota_json
from fota_host.images import esp_image, signing


def espsecure(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "espsecure", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("keys")
    a = fota_json("keys", "generate", "-o", root / "a.pem")
    b = fota_json("keys", "generate", "--scheme", "rsa3072", "-o", root / "b.pem")
    return {"root": root, "a": root / "a.pem", "b": root / "b.pem",
            "da": a["key_digest"], "db": b["key_digest"]}


def test_generated_key_digest_is_espsecures(keys: dict) -> None:
    a = keys["a"]
    assert stat.S_IMODE(a.stat().st_mode) == 0o600
    out = keys["root"] / "a.digest"
    assert espsecure("digest-sbv2-public-key", "--keyfile", a, "-o", out).returncode == 0
    assert out.read_bytes().hex() == keys["da"] != keys["db"]
    assert fota_json("keys", "digest", a) == {"file": str(a), "key_digest": keys["da"]}


def test_keys_errors(keys: dict, tmp_path: Path) -> None:
    before = keys["a"].read_bytes()
    err = fota("keys", "generate", "-o", keys["a"], ok=False).stderr
    assert "never overwritten" in err and keys["a"].read_bytes() == before
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key")
    assert "PEM" in fota("keys", "digest", junk, ok=False).stderr
    assert fota("keys", "generate", "--scheme", "ecdsa256", "-o", tmp_path / "e.pem",
                ok=False).returncode == 2


def test_fota_sign_passes_espsecure_and_rotation(keys: dict, tmp_path: Path) -> None:
    image = tmp_path / "app.bin"
    image.write_bytes(esp_image.build_sim_image("3.1.0", 64 * 1024 + 96))
    signed = tmp_path / "app.signed"
    info = fota_json("sign", image, "--key", keys["a"], "-o", signed)
    assert info["signed"] is True and info["key_digests"] == [keys["da"]]
    assert info["size"] == signed.stat().st_size and info["size"] % 4096 == 0
    assert info["blocks"][0]["digest_ok"] is True
    ok = espsecure("verify-signature", "--version", "2", "--keyfile", keys["a"], signed)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # Rotation: a block from a second key in the same sector; each key verifies.
    both = fota_json("sign", signed, "--key", keys["b"], "-o", signed, "--append")
    assert both["key_digests"] == [keys["da"], keys["db"]]
    for key in (keys["a"], keys["b"]):
        res = espsecure("verify-signature", "--version", "2", "--keyfile", key, signed)
        assert res.returncode == 0, res.stdout + res.stderr
    assert signing.verify(signed.read_bytes(), [keys["db"]]) == (True, keys["db"])
    # The bytes before the sector are the image, padded: the descriptor still reads.
    assert esp_image.parse_app_image(signed.read_bytes()).version == "3.1.0"
    checked = fota_json("pack", "esp32", signed)         # the version: the image's own
    assert (checked["version"], checked["signed"]) == ("3.1.0", True)
    assert checked["key_digests"] == [keys["da"], keys["db"]]
    assert "not '3.2.0'" in fota("pack", "esp32", signed, "--version", "3.2.0",
                                 ok=False).stderr


def test_espsecure_signature_is_read_by_fota_sign(keys: dict, tmp_path: Path) -> None:
    image = tmp_path / "app.bin"
    image.write_bytes(esp_image.build_sim_image("3.2.0", 8192))
    by_esp = tmp_path / "esp.signed"
    assert espsecure("sign-data", "--version", "2", "--keyfile", keys["a"], "-o", by_esp,
                     image).returncode == 0
    ours = tmp_path / "ours.signed"
    fota("sign", image, "--key", keys["a"], "-o", ours)
    # Same structure: same size, same image part, same key and image digest in block 0.
    e, o = by_esp.read_bytes(), ours.read_bytes()
    assert len(e) == len(o) and e[:-4096] == o[:-4096]
    assert e[-4096:][:812] == o[-4096:][:812]
    added = fota_json("sign", by_esp, "--key", keys["b"], "-o", tmp_path / "two", "--append")
    assert added["key_digests"] == [keys["da"], keys["db"]]


def test_sign_errors(keys: dict, tmp_path: Path) -> None:
    image = tmp_path / "app.bin"
    image.write_bytes(esp_image.build_sim_image("3.3.0", 4096))
    signed = tmp_path / "s.bin"
    fota("sign", image, "--key", keys["a"], "-o", signed)
    before = signed.read_bytes()
    assert "signed already" in fota("sign", signed, "--key", keys["b"], "-o", signed,
                                    ok=False).stderr
    assert "with this key already" in fota("sign", signed, "--key", keys["a"], "-o", signed,
                                           "--append", ok=False).stderr
    assert signed.read_bytes() == before
    pub = tmp_path / "pub.pem"
    pub.write_bytes(signing.load_public_key(keys["a"]).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    assert "private key" in fota("sign", image, "--key", pub, "-o", tmp_path / "x",
                                 ok=False).stderr
    assert not (tmp_path / "x").exists()
    # a file no device would verify (newcomer review: /etc/passwd was signed)
    text = tmp_path / "notes.txt"
    text.write_text("root:x:0:0:root:/root:/bin/bash\n" * 40)
    err = fota("sign", text, "--key", keys["a"], "-o", tmp_path / "y", ok=False).stderr
    assert "not an ESP32 app image or an app bundle" in err and "Traceback" not in err
    assert not (tmp_path / "y").exists()


def test_provision_trust(keys: dict, tmp_path: Path) -> None:
    out = tmp_path / "cfg.json"
    spaced = " ".join(keys["db"][i:i + 8].upper() for i in range(0, 64, 8))
    res = fota_json("device", "provision", "--id", "dev-1", "--broker-host", "h",
                    "--trust", keys["a"], "--trust", spaced, "--trust", keys["da"], "-o", out)
    assert res["trusted_keys"] == [keys["da"], keys["db"]]
    assert json.loads(out.read_text())["trusted_keys"] == [keys["da"], keys["db"]]
    plain = tmp_path / "plain.json"
    fota("device", "provision", "--id", "dev-1", "--broker-host", "h", "-o", plain)
    assert "trusted_keys" not in json.loads(plain.read_text())
    bad = tmp_path / "bad.json"
    err = fota("device", "provision", "--id", "dev-1", "--broker-host", "h", "--trust", "abc",
               "-o", bad, ok=False).stderr
    assert "64 hex" in err and not bad.exists()
    four = [f"{i:064x}" for i in range(1, 5)]
    err = fota("device", "provision", "--id", "dev-1", "--broker-host", "h",
               *[x for d in four for x in ("--trust", d)], "-o", bad, ok=False).stderr
    assert "at most three" in err and not bad.exists()
