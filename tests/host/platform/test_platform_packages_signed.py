"""`fota package create` reads what the image says (its version, its signature) and
`fota platform serve --require-signed` refuses unsigned packages; through the real command."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fota_host.images import bundle, esp_image, signing
from platform_fakes import wait_for

FOTA = [sys.executable, "-c", "from fota_host.cli import main; main()"]


def fota(*args: Any, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([*FOTA, *map(str, args)], capture_output=True, text=True, timeout=120)
    assert (proc.returncode == 0) == ok, proc.stdout + proc.stderr
    if not ok:
        assert proc.stderr.startswith("error: "), proc.stderr
    return proc


def fota_json(*args: Any) -> Any:
    return json.loads(fota(*args).stdout)


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("signed")
    key = root / "k.pem"
    signing.generate_key(key)
    app = root / "app-2.0.0.bin"
    app.write_bytes(esp_image.build_sim_image("2.0.0", 32 * 1024))
    signed = root / "app-2.0.0.signed"
    signing.sign_file(app, key, signed)
    pico = root / "pico-3.1.bin"
    pico.write_bytes(bundle.pack("3.1", bundle.sim_app("3.1")))
    pico_signed = root / "pico-3.1.signed"
    signing.sign_file(pico, key, pico_signed)
    blob = root / "blob.bin"
    blob.write_bytes(bytes(range(256)) * 100)
    return {"key": key, "digest": signing.key_digest(key), "app": app, "signed": signed,
            "pico": pico, "pico_signed": pico_signed, "blob": blob}


def test_version_comes_from_the_image(tmp_path: Path, kit: dict[str, Any]) -> None:
    d = tmp_path / "data"
    d.mkdir()
    pkg = fota_json("package", "create", "--data", d, "--file", kit["app"])
    assert pkg["version"] == "2.0.0" and pkg["name"] == "2.0.0"
    assert pkg["signed"] is False and pkg["key_digests"] == [] and pkg["secure_version"] == 0
    assert fota_json("package", "create", "--data", d, "--file", kit["pico_signed"])[
        "version"] == "3.1"
    same = fota_json("package", "create", "--data", d, "--file", kit["app"], "--version",
                     "2.0.0")
    assert same["version"] == "2.0.0"
    err = fota("package", "create", "--data", d, "--file", kit["app"], "--version", "v2",
               ok=False).stderr
    assert "carries version '2.0.0' in its app descriptor, not 'v2'" in err
    err = fota("package", "create", "--data", d, "--file", kit["pico"], "--version", "3.2",
               ok=False).stderr
    assert "'3.1' in its bundle header" in err
    # A file in no format the platform reads: the version must be given.
    err = fota("package", "create", "--data", d, "--file", kit["blob"], ok=False).stderr
    assert "version is required" in err
    assert fota_json("package", "create", "--data", d, "--file", kit["blob"], "--version",
                     "7")["version"] == "7"
    # Compressed or delta files are not packages: the platform makes them.
    z = tmp_path / "app.z"
    fota("pack", "compress", kit["app"], "-o", z)
    assert "store the full image" in fota("package", "create", "--data", d, "--file", z,
                                          ok=False).stderr
    versions = [p["version"] for p in fota_json("package", "list", "--data", d, "--json")]
    assert versions == ["2.0.0", "3.1", "2.0.0", "7"]


def test_signed_packages_report_their_keys(tmp_path: Path, kit: dict[str, Any]) -> None:
    d = tmp_path / "data"
    d.mkdir()
    pkg = fota_json("package", "create", "--data", d, "--file", kit["signed"])
    assert pkg["signed"] is True and pkg["key_digests"] == [kit["digest"]]
    assert pkg["version"] == "2.0.0" and pkg["size"] == kit["signed"].stat().st_size
    key2 = tmp_path / "k2.pem"
    fota("keys", "generate", "-o", key2)
    two = tmp_path / "two.bin"
    fota("sign", kit["signed"], "--key", key2, "--append", "-o", two)
    shown = fota_json("package", "create", "--data", d, "--file", two)
    assert shown["key_digests"] == [kit["digest"], signing.key_digest(key2)]


def test_serve_require_signed_refuses_unsigned(tmp_path: Path, kit: dict[str, Any]) -> None:
    data = tmp_path / "svc"
    proc = subprocess.Popen([*FOTA, "platform", "serve", "--data", str(data), "--http-port",
                             "0", "--mqtt-port", "0", "--require-signed"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: (data / "service.json").exists()
                 and json.loads((data / "service.json").read_text()), timeout=30)
        for unsigned in (kit["app"], kit["pico"], kit["blob"]):
            err = fota("package", "create", "--data", data, "--file", unsigned, "--version",
                       "2.0.0" if unsigned == kit["app"] else "3.1", ok=False).stderr
            assert "not signed" in err and "--require-signed" in err
        assert fota_json("package", "list", "--data", data, "--json") == []
        pkg = fota_json("package", "create", "--data", data, "--file", kit["signed"])
        assert pkg["signed"] is True
        assert not [p for p in (data / "packages").iterdir() if p.name.startswith(".")]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
