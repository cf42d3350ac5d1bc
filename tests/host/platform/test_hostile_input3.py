"""Hostile input, third round, on a real platform over real HTTP: bytes that are not UTF-8
in headers, cookies and forms (401/400, never a 500 or a traceback), times no date can show
(refused, so no output carries `Infinity` or breaks the CLI), CSV files the reader refuses,
and a bad group name called a group name."""

from __future__ import annotations

import http.client
import json
import math
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

FOTA = [sys.executable, "-c", "from fota_host.cli import main; main()"]


def fota(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*FOTA, *args], capture_output=True, text=True, timeout=120)


def _request(info: dict[str, Any], method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """One request; header values are sent as latin-1, so '\\xff' is the byte 0xff."""
    url = urllib.parse.urlsplit(info["api"])
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _strict_json(raw: bytes) -> Any:
    """Standard JSON only: NaN, Infinity and -Infinity are refused."""
    def refuse(name: str) -> None:
        raise AssertionError(f"non-standard JSON constant {name} in {raw[:200]!r}")
    return json.loads(raw, parse_constant=refuse)


def _log(proc: Any) -> str:
    return proc.log_path.read_text(errors="replace")


def test_undecodable_bytes_are_refused_without_a_traceback(embedded, firmware: Path) -> None:
    proc = embedded.start()
    info = proc.info
    auth = {"Authorization": f"Bearer {info['admin_token']}"}
    pkg = embedded.api.create_package(file=str(firmware), version="2.0.0")
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    cases: list[tuple[str, str, bytes | None, dict[str, str], int]] = [
        ("GET", "/api/health", None, {"Authorization": "Bearer \xff"}, 401),
        ("GET", "/api/tasks", None, {"Authorization": "\xff\xfe"}, 401),
        ("GET", "/metrics", None, {"Authorization": "\xff"}, 401),
        ("GET", "/metrics", None, {"Authorization": "Bearer \xff"}, 401),
        ("POST", "/console/login", b"token=\xff", form, 401),
        ("POST", "/console/login", b"token=%ff%fe", form, 401),
        ("POST", "/console/login", b"token=x",
         {"Content-Type": "application/x-www-form-urlencoded; charset=no-such"}, 401),
        ("GET", "/api/tasks", None, {"Cookie": "fota_console=\xff"}, 401),
        ("GET", "/console", None, {"Cookie": "fota_console=\xff"}, 200),  # the sign-in page
        ("POST", "/api/tasks", b'{"name": "x"}',
         {**auth, "Content-Type": "application/json; charset=no-such"}, 400),
        # a lone surrogate (not Unicode) where the store looks up a package
        ("POST", "/api/tasks", b'{"package": "\\udcff", "name": "x"}',
         {**auth, "Content-Type": "application/json"}, 400),
        ("GET", f"/file/upgrade?fileId={pkg['id']}&taskId=1&deviceId=%ff&accessToken=%ff",
         None, {}, 403),
        ("GET", "/file/upgrade?fileId=%ff&taskId=%ed%a0%80&deviceId=d&accessToken=x",
         None, {}, 404),
    ]
    for _ in range(2):
        for method, path, body, headers, want in cases:
            status, answer = _request(info, method, path, body, headers)
            assert status == want, (method, path, headers, status, answer[:300])
    for _ in range(30):  # a client repeating one: a few lines, not one per request
        assert _request(info, "POST", "/console/login", b"token=\xff", form)[0] == 401
    # the credentials still work, and the service is alive
    assert _request(info, "GET", "/api/health", None, auth)[0] == 200
    log = _log(proc)
    assert "Traceback" not in log and " ERROR " not in log, log[-3000:]
    refused = [line for line in log.splitlines() if "console sign-in refused" in line]
    assert 0 < len(refused) <= 18, refused  # 36 refused sign-ins; 5 lines per 10 s


def test_times_no_date_can_show_are_refused(embedded, firmware: Path) -> None:
    proc = embedded.start()
    info = proc.info
    api = embedded.api
    pkg = api.create_package(file=str(firmware), version="2.0.0")
    headers = {"Authorization": f"Bearer {info['admin_token']}",
               "Content-Type": "application/json"}

    def create(extra: str) -> tuple[int, bytes]:
        body = f'{{"package": "{pkg["id"]}", "name": "x", {extra}}}'.encode()
        return _request(info, "POST", "/api/tasks", body, headers)

    for field, value in [("start", "1e400"), ("start", "-1e400"), ("start", "1e300"),
                         ("start", "NaN"), ("start", "Infinity"), ("start", "-1"),
                         ("end", "-1"), ("end", "1e400"), ("start", "9" * 400),
                         ("end", '"0001-01-01T00:00:00"'),
                         ("start", '"9999-12-31T23:59:59-12:00"')]:
        status, answer = create(f'"{field}": {value}')
        assert status in (400, 422), (field, value, status, answer)
        assert _strict_json(answer)["error"].startswith(f"{field}:"), (field, value, answer)
    assert api.list_tasks() == []  # nothing was stored
    # the forms accepted before still are: ISO 8601 and sane epoch seconds
    status, answer = create('"start": "2099-01-01T00:00:00Z", "end": 4102531200')
    assert status == 201, answer
    task = _strict_json(answer)
    assert task["start"] == 4070908800.0 and task["end"] == 4102531200.0
    status, answer = _request(info, "GET", f"/api/tasks/{task['id']}", None, headers)
    assert status == 200 and _strict_json(answer)["start"] == 4070908800.0
    d = str(embedded.data)
    shown = fota("task", "show", "--data", d, str(task["id"]), "--json")
    assert shown.returncode == 0 and "Traceback" not in shown.stderr, shown.stderr
    assert _strict_json(shown.stdout.encode())["id"] == task["id"]
    # the CLI refuses what the API would: a clear error naming the option, exit 2
    for option, value in [("--start", "0001-01-01T00:00"), ("--end", "9999-12-31T23:59:59-12:00")]:
        out = fota("task", "create", "--data", d, "--package", pkg["id"], "--name", "y",
                   option, value)
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
        assert out.stderr.startswith(f"error: {option}") and "out of range" in out.stderr
    out = fota("task", "watch", "--data", d, str(task["id"]), "--interval", "nan")
    assert out.returncode == 2 and "--interval" in out.stderr and "Traceback" not in out.stderr
    assert [t["id"] for t in api.list_tasks()] == [task["id"]]
    assert "Traceback" not in _log(proc)


def test_the_api_never_writes_nan_or_infinity() -> None:
    """A non-finite number that reaches an answer (a row stored before the API refused
    them) is shown as null: the body stays standard JSON that JSON readers take."""
    from fota_host.platform.apijson import json_response

    def strict(text: str) -> object:
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in the body"))

    assert strict(json_response({"start": 1.5}).text) == {"start": 1.5}
    for bad in (math.inf, -math.inf, math.nan):
        assert strict(json_response({"start": bad, "n": [bad, 2]}).text) == \
            {"start": None, "n": [None, 2]}


@pytest.mark.parametrize("service", [True, False], ids=["service", "no-service"])
def test_csv_the_reader_refuses_is_a_clear_error(embedded, firmware: Path, tmp_path: Path,
                                                 service: bool) -> None:
    proc = embedded.start()
    api = embedded.api
    pkg = api.create_package(file=str(firmware), version="2.0.0")
    task = api.create_task(package=pkg["id"], name="csv")
    if not service:
        proc.stop()
    d, tid = str(embedded.data), str(task["id"])
    huge = tmp_path / "huge.csv"
    huge.write_text("device\nok-1\n" + "a" * 200_000 + "\n")
    out = fota("task", "import", "--data", d, tid, str(huge))
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.startswith("error: the device list, line 3: field larger"), out.stderr
    nul = tmp_path / "nul.csv"
    nul.write_bytes(b"device\nok-1\nbad\x00id\n")
    out = fota("task", "import", "--data", d, tid, str(nul))
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    rows = json.loads(out.stdout)
    assert [(r["row"], r["ok"]) for r in rows] == [(1, True), (2, False)], rows
    assert "invalid device id" in rows[1]["error"]
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"device\n\xe9t\xe9\n")
    out = fota("task", "import", "--data", d, tid, str(latin))
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.startswith("error: cannot read"), out.stderr
    if service:
        # the API itself: 400 naming the line, nothing added; bad bytes are a 400 too
        headers = {"Authorization": f"Bearer {proc.info['admin_token']}",
                   "Content-Type": "text/csv"}
        for body, want in [(b"a" * 200_000, "line 1: field larger"), (b"\xe9t\xe9\n", "UTF-8")]:
            status, answer = _request(proc.info, "POST", f"/api/tasks/{tid}/import", body,
                                      headers)
            assert status == 400 and want in _strict_json(answer)["error"], (status, answer)
        assert [x["device"] for x in api.get_task(tid)["devices"]] == ["ok-1"]
        assert "Traceback" not in _log(proc)


def test_a_bad_group_is_called_a_group(embedded, firmware: Path) -> None:
    embedded.start()
    pkg = embedded.api.create_package(file=str(firmware), version="2.0.0")
    out = fota("task", "create", "--data", str(embedded.data), "--package", pkg["id"],
               "--name", "g", "--group", "ok-group", "--group", "a/b")
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "--group 'a/b': invalid group name" in out.stderr and "device id" not in out.stderr
    assert embedded.api.list_tasks() == []
    # the API says the same, for a task's groups and for tagging devices
    auth = {"Authorization": f"Bearer {embedded.proc.info['admin_token']}",
            "Content-Type": "application/json"}
    for path, body in (("/api/tasks", {"package": pkg["id"], "name": "g", "groups": ["a/b"]}),
                       ("/api/devices/tags", {"devices": ["d1"], "add": "a/b"})):
        status, raw = _request(embedded.proc.info, "POST", path, json.dumps(body).encode(),
                               auth)
        assert status == 400, (path, raw)
        error = _strict_json(raw)["error"]
        assert "invalid group name 'a/b'" in error and "device id" not in error, error
    assert embedded.api.list_tasks() == []


def test_a_time_stored_before_the_check_still_reads(embedded, firmware: Path) -> None:
    """A task whose start was stored as Infinity (accepted before the API checked times)
    answers standard JSON, with the time shown as null, instead of breaking every answer
    that lists it."""
    import sqlite3

    proc = embedded.start()
    pkg = embedded.api.create_package(file=str(firmware), version="2.0.0")
    task = embedded.api.create_task(package=pkg["id"], name="old")
    proc.stop()
    with sqlite3.connect(embedded.data / "platform.db") as db:
        assert db.execute("UPDATE tasks SET start_at = 9e999 WHERE id = ?",
                          (task["id"],)).rowcount == 1
    proc = embedded.start()
    auth = {"Authorization": f"Bearer {proc.info['admin_token']}"}
    status, raw = _request(proc.info, "GET", f"/api/tasks/{task['id']}", headers=auth)
    assert status == 200, raw
    assert _strict_json(raw)["start"] is None
    status, raw = _request(proc.info, "GET", "/api/tasks", headers=auth)
    assert status == 200 and task["name"] in json.dumps(_strict_json(raw))
    assert "Traceback" not in _log(proc)
