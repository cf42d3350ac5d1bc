"""Bad input the admin API must refuse cleanly: bodies the JSON decoder cannot take, and
packages whose image file is gone."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


def _post(info: dict[str, Any], path: str, data: bytes) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(info["api"] + path, data=data, method="POST", headers={
        "Authorization": f"Bearer {info['admin_token']}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_undecodable_json_bodies_get_400_without_traceback(embedded) -> None:
    proc = embedded.start()
    bodies = [
        b"[" * 100_000 + b"]" * 100_000,   # too deep: RecursionError in the decoder
        b'{"package": ' + b"9" * 50_000 + b"}",  # too long an integer: ValueError
        b'{"name": "\xff\xfe"}',            # not UTF-8
    ]
    for body in bodies:
        status, answer = _post(proc.info, "/api/tasks", body)
        assert status == 400, answer
        assert "not valid JSON" in answer["error"]
    assert embedded.api.list_packages() == []  # still answering
    log = proc.log_path.read_text(errors="replace")
    assert "Traceback" not in log and "RecursionError" not in log


def test_package_with_missing_image_is_refused(embedded, firmware) -> None:
    proc = embedded.start()
    api = embedded.api
    pkg = api.create_package(file=str(firmware), version="2.0.0")
    kept = api.create_task(package=pkg["id"], name="before")  # made while the file was there
    (embedded.data / "packages" / f"{pkg['id']}.bin").unlink()  # damage
    body = json.dumps({"package": pkg["id"], "name": "after"}).encode()
    status, answer = _post(proc.info, "/api/tasks", body)
    assert status == 409, answer
    assert pkg["id"] in answer["error"] and "image file is missing" in answer["error"]
    assert "upload the package again" in answer["error"] and "backup" in answer["error"]
    status, answer = _post(proc.info, f"/api/tasks/{kept['id']}/devices",
                           json.dumps({"devices": ["dev-1"]}).encode())
    assert status == 409 and pkg["id"] in answer["error"], answer
    assert [t["name"] for t in api.list_tasks()] == ["before"]
    embedded.proc.stop()
    proc = embedded.start()
    log = proc.log_path.read_text(errors="replace")
    assert [line for line in log.splitlines()
            if "WARNING" in line and "image file is missing" in line and pkg["id"] in line]


def test_unknown_api_routes_answer_json(embedded) -> None:
    """A script that reads `error` gets one for a mistyped route or method too, and an
    unknown route without the token is still a 401 (routes are not probed for free)."""
    proc = embedded.start()
    status, answer = _post(proc.info, "/api/taskz", b"{}")
    assert status == 404 and "/api/taskz" in answer["error"], answer
    req = urllib.request.Request(proc.info["api"] + "/api/packages", method="DELETE", headers={
        "Authorization": f"Bearer {proc.info['admin_token']}"})
    try:
        urllib.request.urlopen(req, timeout=30)
        raise AssertionError("DELETE /api/packages was accepted")
    except urllib.error.HTTPError as exc:
        refused = json.loads(exc.read())
        assert exc.code == 405 and "GET" in exc.headers["Allow"], refused
        assert "DELETE" in refused["error"] and "GET" in refused["error"]
    req = urllib.request.Request(proc.info["api"] + "/api/taskz", method="GET")
    try:
        urllib.request.urlopen(req, timeout=30)
        raise AssertionError("no token was accepted")
    except urllib.error.HTTPError as exc:
        assert exc.code == 401
    assert embedded.api.list_packages() == []
