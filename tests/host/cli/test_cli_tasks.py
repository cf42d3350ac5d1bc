"""`fota package|task|device` for people and for machines: tables by default, `--json`
everywhere, ISO 8601 times with offsets, both ids in `task show`, device text shown as
data, and `fota task watch` (#13.3, #13.5, #13.6, #12.10)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from helpers import Output, wait_for

FOTA = [sys.executable, "-m", "fota_host"]
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?[+-]\d\d:\d\d")
MARKUP = "[/bold] [red]not red[/red]"


def fota(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    # a wide terminal: the checks below look for whole cells, not for how they wrap
    proc = subprocess.run([*FOTA, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "COLUMNS": "200"})
    if ok:
        assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc


def fota_json(*args: str) -> Any:
    return json.loads(fota(*args).stdout)


class Device:
    """A device on the platform's broker speaking the protocol's messages (paho)."""

    def __init__(self, device_id: str, broker: str) -> None:
        self.id = device_id
        self.notices: list[dict] = []
        self.ready = threading.Event()
        host, port = broker.rsplit("/", 1)[1].rsplit(":", 1)
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device_id)
        self.client.on_connect = lambda c, *_: c.subscribe(f"devices/{device_id}/ota/upgrade", 1)
        self.client.on_subscribe = lambda *_: self.ready.set()
        self.client.on_message = lambda c, u, m: self.notices.append(json.loads(m.payload))
        self.client.connect(host, int(port))
        self.client.loop_start()
        assert self.ready.wait(20)

    def send(self, kind: str, task_id: int, **params: Any) -> None:
        info = self.client.publish(f"devices/{self.id}/ota/{kind}", json.dumps(
            {"taskId": task_id, "params": {"module": "MCU", **params}}), qos=1)
        info.wait_for_publish(10)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_a_rollout_through_the_cli_tables_json_watch(platform, tmp_path: Path) -> None:
    d = str(tmp_path / "plat")
    image = tmp_path / "v2.bin"
    image.write_bytes(os.urandom(20_000))
    pkg = fota_json("package", "create", "--data", d, "--file", str(image), "--version", "2.0.0")
    assert ISO.fullmatch(pkg["created"])                         # JSON times: ISO with offset
    # a time without an offset is local time
    task = fota_json("task", "create", "--data", d, "--package", pkg["id"], "--name", "roll",
                     "--end", "2030-01-01T08:00")
    assert task["end"] == datetime(2030, 1, 1, 8, 0).astimezone().isoformat()
    tid = str(task["id"])
    added = fota_json("task", "add-devices", "--data", d, tid, "cli-ok", "cli-bad")
    sub = {r["device"]: r["subtask"] for r in added}
    devices = {i: Device(i, platform.broker) for i in sub}
    watcher = subprocess.Popen([*FOTA, "task", "watch", "--data", d, tid, "--json",
                                "--interval", "0.2"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        fota_json("task", "start", "--data", d, tid)
        for dev in devices.values():
            wait_for(lambda dev=dev: dev.notices, timeout=30, what=f"{dev.id}'s notice")
            assert dev.notices[0]["taskId"] == sub[dev.id]       # the sub-task id is taskId
        devices["cli-ok"].send("progress", sub["cli-ok"], step=40, desc="downloading")
        devices["cli-bad"].send("progress", sub["cli-bad"], step=30, desc=MARKUP)
        wait_for(lambda: [x["desc"] for x in fota_json("task", "show", "--data", d, tid,
                                                         "--json")["devices"]]
                 == ["downloading", MARKUP], timeout=30, what="both reports")
        shown = fota("task", "show", "--data", d, tid).stdout          # Rich markup: no crash
        assert MARKUP in shown and f"task {tid}" in shown
        assert str(sub["cli-ok"]) in shown and "sub-task" in shown
        devices["cli-ok"].send("inform", sub["cli-ok"], version="2.0.0")
        devices["cli-bad"].send("progress", sub["cli-bad"], step=-2, desc="download failed")
        out, err = watcher.communicate(timeout=60)
    finally:
        if watcher.poll() is None:
            watcher.kill()
        for dev in devices.values():
            dev.stop()
    assert watcher.returncode == 1, err             # ended, not every device succeeded
    lines = [json.loads(x) for x in out.splitlines()]
    assert all(ISO.fullmatch(x["time"]) for x in lines)
    steps = [(x["device"], x["subtask"], x["state"], x["step"], x["desc"])
             for x in lines if "device" in x]
    assert ("cli-ok", sub["cli-ok"], "upgrading", 40, "downloading") in steps
    assert ("cli-bad", sub["cli-bad"], "upgrading", 30, MARKUP) in steps
    assert [x["device"] for x in lines if x.get("state") == "succeeded"] == ["cli-ok"]
    assert lines[-1] == {"time": lines[-1]["time"], "task": int(tid), "state": "finished",
                         "counts": {"succeeded": 1, "failed": 1}}

    shown = fota_json("task", "show", "--data", d, tid, "--json")
    assert set(shown) == {"id", "state", "reason", "waiting", "waves", "devices"}
    assert {x["device"]: x["subtask"] for x in shown["devices"]} == sub
    assert all(ISO.fullmatch(x["updated"]) for x in shown["devices"])
    live = fota("task", "watch", "--data", d, tid, ok=False)        # already finished
    assert live.returncode == 1 and "1 failed, 1 succeeded" in live.stdout

    listed = fota("device", "list", "--data", d).stdout
    assert "cli-ok" in listed and ISO.search(listed)
    assert all(ISO.fullmatch(x["last_seen"])
               for x in fota_json("device", "list", "--data", d, "--json"))
    assert pkg["id"] in fota("package", "list", "--data", d).stdout
    assert fota_json("package", "list", "--data", d, "--json")[0]["id"] == pkg["id"]
    assert pkg["md5"] in fota("package", "show", "--data", d, pkg["id"]).stdout
    assert fota_json("package", "show", "--data", d, pkg["id"], "--json")["md5"] == pkg["md5"]
    table = fota("task", "list", "--data", d).stdout
    assert "roll" in table and "finished" in table
    assert fota_json("task", "list", "--data", d, "--json")[0]["counts"] == {
        "succeeded": 1, "failed": 1}


@pytest.mark.parametrize("as_json", [False, True])
def test_watch_stops_on_ctrl_c_with_one_line(tmp_path: Path, as_json: bool) -> None:
    d = tmp_path / "offline"
    d.mkdir()
    image = tmp_path / "v2.bin"
    image.write_bytes(os.urandom(1000))
    pkg = fota_json("package", "create", "--data", str(d), "--file", str(image), "--version", "2")
    task = fota_json("task", "create", "--data", str(d), "--package", pkg["id"], "--name", "n")
    json_flag = ["--json"] if as_json else []
    proc = subprocess.Popen([*FOTA, "task", "watch", "--data", str(d), str(task["id"]), *json_flag],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        assert Output(proc).wait('"not_started"' if as_json else "watching", timeout=30)
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(30)
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert "Traceback" not in err and err.strip().count("\n") == 0
    assert "interrupted" in err and "goes on" in err


def test_bad_times_and_the_task_help(tmp_path: Path) -> None:
    d = tmp_path / "offline"
    d.mkdir()
    bad = fota("task", "create", "--data", str(d), "--package", "f" * 20, "--name", "x",
               "--start", "tomorrow", ok=False)
    assert bad.returncode == 2 and "--start 'tomorrow' is not an ISO 8601 time" in bad.stderr
    help_text = fota("task", "--help").stdout
    for command in ("create", "add-devices", "start", "show", "watch", "cancel"):
        assert re.search(rf"^\s+{command}\s", help_text, re.M), command


def test_device_text_is_shown_escaped(capsys) -> None:
    """Terminal escape sequences and invisible format characters in anything shown are
    printed as escapes: they can neither restyle nor hide what an operator reads."""
    from fota_host.cli.output import print_table, safe

    hostile = "ok\x1b[2J\x1b]0;owned\x07 \u202eevil\r[/bold]"
    print_table("t", ("desc",), [[hostile]])
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\u202e" not in out and "\r" not in out and "\x07" not in out
    assert "\\x1b[2J" in out and "\\u202e" in out and "[/bold]" in out
    assert safe("中文 ok") == "中文 ok"


def test_task_stats_table_shows_a_dash_for_durations_not_known_yet(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    image = tmp_path / "app.bin"
    image.write_bytes(b"\x00" * 4096)
    pkg = fota_json("package", "create", "--data", str(data), "--file", str(image),
                    "--version", "2.0.0")["id"]
    tid = str(fota_json("task", "create", "--data", str(data), "--package", pkg,
                        "--name", "t", "--wave", "1")["id"])
    fota("task", "add-devices", "--data", str(data), tid, "dev-1")
    table = fota("task", "stats", "--data", str(data), tid).stdout
    assert re.search(r"duration median / p95 \(s\)\s+- / -", table), table
    assert "None" not in table
