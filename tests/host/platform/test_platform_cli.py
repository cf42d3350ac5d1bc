"""The `fota package|task|device` commands against a running platform, and without one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from platform_fakes import FakeDevice, wait_for

FOTA = [sys.executable, "-c", "from fota_host.cli import main; main()"]


def fota(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([*FOTA, *args],
                          capture_output=True, text=True, timeout=60)
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


def fota_json(*args: str):
    return json.loads(fota(*args).stdout)


def test_cli_end_to_end(embedded, firmware: Path, tmp_path: Path) -> None:
    embedded.start(device_timeout=30)
    d = str(embedded.data)
    pkg = fota_json("package", "create", "--data", d, "--file", str(firmware), "--version",
                    "2.0.0", "--name", "two", "--product", "demo", "--sign", "sha256",
                    "--desc", "first")
    assert len(pkg["id"]) == 20 and pkg["sign"] == "sha256" and pkg["size"] == 150_000
    assert fota_json("package", "show", "--data", d, pkg["id"], "--json")["md5"] == pkg["md5"]
    assert [p["id"] for p in fota_json("package", "list", "--data", d, "--json")] == [pkg["id"]]
    task = fota_json("task", "create", "--data", d, "--package", pkg["id"], "--name", "t1",
                     "--desc", "cli")
    tid = str(task["id"])
    added = fota_json("task", "add-devices", "--data", d, tid, "cli-1")
    assert added == [{"device": "cli-1", "ok": True, "subtask": added[0]["subtask"],
                      "warning": added[0]["warning"]}]
    assert "never seen" in added[0]["warning"]  # no device has reported yet
    csv_file = tmp_path / "devices.csv"
    csv_file.write_text("deviceId,note\ncli-2,x\nbad id,y\ncli-1,z\n\ncli-3,\n")
    rows = fota_json("task", "import", "--data", d, tid, str(csv_file))
    assert [(r["row"], r["device"], r["ok"]) for r in rows] == [
        (1, "cli-2", True), (2, "bad id", False), (3, "cli-1", False), (4, "cli-3", True)]
    devs = [FakeDevice(x, embedded.broker).start() for x in ("cli-1", "cli-2", "cli-3")]
    try:
        assert fota_json("task", "start", "--data", d, tid)["state"] == "running"
        notices = [dv.wait_notice() for dv in devs]
        devs[0].upgrade(notices[0])
        devs[1].progress(notices[1]["taskId"], 40, "downloading")
        wait_for(lambda: [x["state"] for x in
                          fota_json("task", "show", "--data", d, tid, "--json")["devices"]]
                 == ["succeeded", "upgrading", "pending"], timeout=10)
        shown = fota_json("task", "show", "--data", d, tid, "--json")
        assert set(shown) == {"id", "state", "reason", "waiting", "waves", "devices"}
        assert shown["id"] == task["id"] and shown["state"] == "running"
        assert {k: shown["devices"][1][k] for k in ("device", "state", "step", "desc")} == \
               {"device": "cli-2", "state": "upgrading", "step": 40, "desc": "downloading"}
        table = fota("task", "show", "--data", d, tid).stdout
        assert "cli-2" in table and "upgrading" in table and "downloading" in table
        out = fota_json("task", "cancel", "--data", d, tid, "cli-3")
        assert out == [{"device": "cli-3", "ok": True}]
        assert fota_json("task", "cancel", "--data", d, tid, "--all") == [
            {"device": "cli-2", "ok": True}]
        assert fota_json("task", "show", "--data", d, tid, "--json")["state"] == "finished"
        listed = {x["id"]: x for x in fota_json("device", "list", "--data", d, "--json")}
        assert listed["cli-1"]["version"] == "2.0.0" and listed["cli-1"]["online"] is True
        assert "cli-1" in fota("device", "list", "--data", d).stdout
    finally:
        for dv in devs:
            dv.stop()


def test_cli_bad_input_is_clear_and_changes_nothing(embedded, firmware: Path,
                                                    tmp_path: Path) -> None:
    embedded.start()
    d = str(embedded.data)
    cases = [
        (["package", "create", "--data", d, "--file", str(tmp_path / "nope.bin"), "--version",
          "1"], "no such file"),
        (["package", "create", "--data", d, "--version", "1"], "exactly one of --file"),
        (["package", "create", "--data", d, "--file", str(firmware), "--version", "1",
          "--sign", "crc"], "Invalid value"),
        (["package", "show", "--data", d, "nope"], "unknown package"),
        (["task", "create", "--data", d, "--package", "f" * 20, "--name", "x"],
         "unknown package"),
        (["task", "show", "--data", d, "42"], "unknown task"),
        (["task", "show", "--data", d, "x; rm -rf /"], "task id must be an integer"),
        (["task", "start", "--data", d, "7"], "unknown task"),
        (["task", "cancel", "--data", d, "1"], "give device ids or --all"),
        (["package", "create", "--data", d, "--url", "ftp://example/fw.bin", "--version",
          "1"], "http(s)"),
    ]
    for args, message in cases:
        proc = fota(*args, ok=False)
        assert proc.returncode != 0, args
        assert message in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
    assert fota_json("package", "list", "--data", d, "--json") == []
    assert fota_json("task", "list", "--data", d, "--json") == []


def test_cli_without_service_uses_the_store(tmp_path: Path, firmware: Path) -> None:
    """Packages and tasks can be prepared before `serve`; the service then runs them."""
    d = str(tmp_path / "offline")
    os.makedirs(d)
    pkg = fota_json("package", "create", "--data", d, "--file", str(firmware), "--version",
                    "2.0.0")
    task = fota_json("task", "create", "--data", d, "--package", pkg["id"], "--name", "pre")
    fota_json("task", "add-devices", "--data", d, str(task["id"]), "pre-1")
    assert fota_json("task", "show", "--data", d, str(task["id"]), "--json")["devices"][0][
        "state"] == "pending"
    assert fota("task", "show", "--data", str(tmp_path / "missing"), "1", ok=False).returncode


def test_serve_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    data = tmp_path / "svc"
    proc = subprocess.Popen([*FOTA, "platform", "serve", "--data", str(data), "--http-port",
                             "0", "--mqtt-port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        info = wait_for(lambda: (data / "service.json").exists()
                        and json.loads((data / "service.json").read_text()), timeout=20)
        assert set(info) >= {"api", "admin_token", "broker", "file_base", "pid"}
        assert info["pid"] == proc.pid
        assert info["file_base"] == info["api"] + "/file/upgrade"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        assert not (data / "service.json").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
    bad = subprocess.run([*FOTA, "platform", "serve",
                          "--data", str(data), "--broker", "http://x"], capture_output=True,
                         text=True, timeout=30)
    assert bad.returncode != 0 and "mqtt[s]://" in bad.stderr


def test_serve_on_a_port_in_use_names_the_port(tmp_path: Path) -> None:
    """A taken HTTP port is an error that names it and the option to change it (newcomer
    review: it was only "[Errno 98] Address already in use")."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        bad = subprocess.run([*FOTA, "platform", "serve", "--data", str(tmp_path / "svc"),
                              "--host", "127.0.0.1", "--http-port", str(port),
                              "--mqtt-port", "0"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr
    assert f"HTTP port 127.0.0.1:{port}" in bad.stderr and "--http-port" in bad.stderr


def test_serve_on_an_address_not_of_this_machine_names_host(tmp_path: Path) -> None:
    """A --host that is no address here is an error that points at --host, not at the port
    (newcomer review: `--host 999.1.1.1` advised choosing another --http-port)."""
    for host in ("999.1.1.1", "192.0.2.1"):   # not an address; TEST-NET-1 (RFC 5737)
        bad = subprocess.run([*FOTA, "platform", "serve", "--data", str(tmp_path / "svc"),
                              "--host", host, "--http-port", "0", "--mqtt-port", "0"],
                             capture_output=True, text=True, timeout=60)
        assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr
        assert "give --host an address of this machine" in bad.stderr, bad.stderr
        assert "--http-port" not in bad.stderr
