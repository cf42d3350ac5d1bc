"""The `fota pack` / `fota sim` commands as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def fota(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fota_host", *args], capture_output=True,
                          text=True, timeout=300)


def test_sim_image_then_sim_update_status_boot_confirm(tmp_path, served):
    out = tmp_path / "v2.bin"
    made = fota("pack", "sim-image", "--board", "esp32", "--version", "2.0.0",
                "--size", "262144", "-o", str(out))
    assert made.returncode == 0, made.stderr
    info = json.loads(made.stdout)
    assert info["size"] == 262144 == out.stat().st_size
    assert len(info["md5"]) == 32 and len(info["sha256"]) == 64
    (served.root / "v2.bin").write_bytes(out.read_bytes())
    flash = tmp_path / "flash"
    upd = fota("sim", "update", "--flash", str(flash), "--board", "esp32",
               served.server.url("v2.bin"), "--md5", info["md5"], "--size", "262144",
               "--sha256", info["sha256"], "--heap", "52K")
    assert upd.returncode == 0, upd.stderr
    report = json.loads(upd.stdout)
    assert set(report) >= {"ok", "step", "reason", "bytes"} and report["ok"]
    st = json.loads(fota("sim", "status", "--flash", str(flash)).stdout)
    assert set(st) >= {"board", "running", "boot", "pending", "versions"}
    assert st["boot"] == "ota_1" and st["versions"]["ota_1"] == "2.0.0"
    st = json.loads(fota("sim", "boot", "--flash", str(flash)).stdout)
    assert st["running"] == "ota_1" and st["pending"] is True
    st = json.loads(fota("sim", "confirm", "--flash", str(flash)).stdout)
    assert st["pending"] is False


def test_failed_update_exits_nonzero_with_json(tmp_path, served):
    flash = tmp_path / "flash"
    upd = fota("sim", "update", "--flash", str(flash), "--board", "esp32",
               served.server.url("missing.bin"), "--md5", "0" * 32, "--size", "5000")
    assert upd.returncode == 1
    assert json.loads(upd.stdout)["step"] == -2


def test_bad_arguments_are_clear_errors(tmp_path):
    flash = tmp_path / "flash"
    bad_md5 = fota("sim", "update", "--flash", str(flash), "http://x/y", "--md5", "xyz",
                   "--size", "10")
    assert bad_md5.returncode == 2 and "--md5 must be 32 hex digits" in bad_md5.stderr
    assert not flash.exists()                        # nothing half-made
    no_flash = fota("sim", "status", "--flash", str(tmp_path / "nowhere"))
    assert no_flash.returncode == 2 and "not a simulated flash folder" in no_flash.stderr
    bad_size = fota("pack", "sim-image", "--version", "1", "--size", "1000", "-o",
                    str(tmp_path / "x.bin"))
    assert bad_size.returncode == 2 and "multiple of 16" in bad_size.stderr


def test_corrupt_otadata_is_reported_not_a_crash(tmp_path):
    flash = tmp_path / "flash"
    assert fota("sim", "init", "--flash", str(flash), "--board", "esp32").returncode == 0
    (flash / "otadata.json").write_text("garbage")
    res = fota("sim", "boot", "--flash", str(flash))
    assert res.returncode == 2 and "otadata.json is unreadable" in res.stderr


def test_pack_bundle_from_folder(tmp_path: Path):
    app = tmp_path / "app"
    app.mkdir()
    (app / "app.py").write_text("def main():\n    pass\n")
    out = tmp_path / "app.fotb"
    res = fota("pack", "bundle", str(app), "--version", "3.1.0", "-o", str(out))
    assert res.returncode == 0, res.stderr
    from fota_host.images import bundle

    unpacked = bundle.unpack(out.read_bytes())
    assert unpacked.version == "3.1.0" and set(unpacked.files) == {"app.mpy"}
    missing = tmp_path / "empty"
    missing.mkdir()
    res = fota("pack", "bundle", str(missing), "--version", "1", "-o", str(out))
    assert res.returncode == 2 and "no app.py" in res.stderr


def test_an_unwritable_output_or_an_absurd_size_is_a_clear_error(tmp_path):
    """Bad -o and --size (newcomer review): an error naming the file or the range, at once,
    no traceback and no file; before, a missing folder was a FileNotFoundError traceback and
    --size 100000000000000 spun for good building the image in memory."""
    for out in (tmp_path / "no" / "such" / "x.bin", Path("/proc/x.bin")):
        for board in ("esp32", "pico_w"):
            res = fota("pack", "sim-image", "--board", board, "--version", "2.0.0",
                       "-o", str(out))
            assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
            assert f"cannot write {out}" in res.stderr
            assert not out.exists()
    big = tmp_path / "big.bin"
    res = fota("pack", "sim-image", "--version", "2.0.0", "--size", "100000000000000",
               "-o", str(big))
    assert res.returncode == 2 and "--size" in res.stderr and "67108864" in res.stderr
    assert not big.exists()


def test_a_fleet_or_device_the_boards_would_refuse_is_refused_at_once(tmp_path):
    """Device ids and configs the device itself would refuse (newcomer review): before,
    `--prefix-id a/b` died on a missing log folder and `--config '{"broker": 5}'` ran a
    fleet whose every device logged "OTA disabled" while the run reported success. Now the
    firmware's own config check runs first: a clear error, exit 2, nothing made."""
    data = tmp_path / "fleet"
    broker = "mqtt://127.0.0.1:1"
    cases = [
        (["--prefix-id", "a/b"], "--prefix-id"),
        (["--prefix-id", "x" * 70], "--prefix-id"),
        (["--config", '{"broker": 5}'], "broker must be an object"),
        (["--config", '{"download": {"idle_s": 0}}'], "download.idle_s"),
        (["--config", '{"trusted_keys": ["zz"]}'], "trusted_keys"),
    ]
    for extra, words in cases:
        res = fota("sim", "fleet", "--data", str(data), "--count", "2", "--broker", broker,
                   *extra)
        assert res.returncode == 2, (extra, res.stderr)
        assert words in res.stderr and "Traceback" not in res.stderr, res.stderr
        assert not data.exists(), extra


def test_a_short_file_is_reported_at_the_byte_it_ended(tmp_path):
    """A body without Content-Length, shorter than the notice's size, ends the update at
    step -2 naming the bytes it really had (newcomer review: a 1 352-byte file was
    reported as ending at byte 4)."""
    import socket
    import threading

    body = b"\xe9" + bytes(range(255)) + b"x" * 1096                      # 1 352 B
    srv = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.0 200 OK\r\n"
                         b"\r\n" + body)

    threading.Thread(target=serve, daemon=True).start()
    try:
        upd = fota("sim", "update", "--flash", str(tmp_path / "flash"), "--board", "esp32",
                   f"http://127.0.0.1:{srv.getsockname()[1]}/short.bin", "--md5", "0" * 32,
                   "--size", "300000")
    finally:
        srv.close()
    assert upd.returncode == 1, upd.stderr
    report = json.loads(upd.stdout)
    assert report["step"] == -2, report
    assert "1352 of 300000 bytes" in report["reason"], report


def test_a_version_devices_could_not_report_is_refused(tmp_path):
    """The version an image carries is what its device reports on /ota/inform: a control
    character or invalid UTF-8 in it is refused at `fota pack`, for every image kind, as the
    platform refuses it (newcomer review: `--version $'a\\nb'` was packed)."""
    for board in ("esp32", "pico_w"):
        for version in ("a\nb", "1.0\t", "", "x" * 32):
            out = tmp_path / "x.bin"
            res = fota("pack", "sim-image", "--board", board, "--version", version,
                       "-o", str(out))
            assert res.returncode == 2, (board, version)
            assert "version" in res.stderr and "Traceback" not in res.stderr, res.stderr
            assert not out.exists()
