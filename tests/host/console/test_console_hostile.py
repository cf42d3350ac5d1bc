"""Hostile requests to the console's endpoints: no session, a forged cookie, cross-site and
token-less state changes (CSRF), an oversized upload, and HTML where text belongs."""

from __future__ import annotations

import http.client
import json
import os
import re
import urllib.parse
from pathlib import Path
from typing import Any

from conftest import sign_in
from platform_fakes import FakeDevice, http_get
from playwright.sync_api import expect


class Http:
    """One connection's worth of raw HTTP to the platform (no redirects followed)."""

    def __init__(self, info: dict[str, Any]) -> None:
        url = urllib.parse.urlsplit(info["api"])
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        self.origin = info["api"]

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def sign_in(self, token: str) -> tuple[str, str]:
        """(cookie header value, CSRF token) of a new session."""
        status, headers, _ = self.request(
            "POST", "/console/login", urllib.parse.urlencode({"token": token}).encode(),
            {"Content-Type": "application/x-www-form-urlencoded", "Origin": self.origin})
        assert status == 303, status
        cookie = headers["set-cookie"].split(";")[0]
        _, _, page = self.request("GET", "/console", headers={"Cookie": cookie})
        csrf = re.search(rb'name="csrf-token" content="([^"]+)"', page)
        assert csrf, page[:300]
        return cookie, csrf.group(1).decode()


def test_nothing_without_a_session(platform: Any) -> None:
    web = Http(platform.proc.info)
    forged = {"Cookie": "fota_console=" + "A" * 43}
    for headers in ({}, forged, {"Cookie": "fota_console="}):
        status, _, page = web.request("GET", "/console", headers=headers)
        assert status == 200 and b"Admin token" in page
        assert b"csrf-token" not in page and b"app.js" not in page
        for path in ("/api/tasks", "/api/devices", "/console/events", "/console/static/app.js"):
            assert web.request("GET", path, headers=headers)[0] == 401, (path, headers)
        status, _, body = web.request("POST", "/api/tasks", b'{"package": "x", "name": "n"}',
                                      {**headers, "Content-Type": "application/json",
                                       "X-CSRF-Token": "guess"})
        assert status == 401, body
    # the Bearer token still opens the API
    token = platform.proc.info["admin_token"]
    assert web.request("GET", "/api/tasks", headers={"Authorization": f"Bearer {token}"})[0] == 200


def test_session_cookie_and_sign_out(platform: Any) -> None:
    web = Http(platform.proc.info)
    token = platform.proc.info["admin_token"]
    status, headers, _ = web.request(
        "POST", "/console/login", urllib.parse.urlencode({"token": token}).encode(),
        {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 303
    attrs = [a.strip().lower() for a in headers["set-cookie"].split(";")]
    assert "httponly" in attrs and "samesite=strict" in attrs and "path=/" in attrs
    cookie, csrf = web.sign_in(token)
    assert web.request("GET", "/api/tasks", headers={"Cookie": cookie})[0] == 200
    # signing out needs the CSRF token too; afterwards the cookie is worth nothing
    assert web.request("POST", "/console/logout", headers={"Cookie": cookie})[0] == 403
    assert web.request("POST", "/console/logout",
                       headers={"Cookie": cookie, "X-CSRF-Token": csrf})[0] == 200
    assert web.request("GET", "/api/tasks", headers={"Cookie": cookie})[0] == 401


def test_wrong_token_and_cross_site_sign_in_refused(platform: Any) -> None:
    web = Http(platform.proc.info)
    for token in ("wrong", "", platform.proc.info["admin_token"] + "x"):
        status, headers, page = web.request(
            "POST", "/console/login", urllib.parse.urlencode({"token": token}).encode(),
            {"Content-Type": "application/x-www-form-urlencoded"})
        assert status == 401 and "set-cookie" not in headers and b"Wrong admin token" in page
    # a form on another site posting the right token (login CSRF) gets no session either
    status, headers, _ = web.request(
        "POST", "/console/login",
        urllib.parse.urlencode({"token": platform.proc.info["admin_token"]}).encode(),
        {"Content-Type": "application/x-www-form-urlencoded", "Origin": "https://evil.example"})
    assert status == 403 and "set-cookie" not in headers


def test_state_changes_need_the_csrf_header(platform: Any, firmware: Path) -> None:
    web = Http(platform.proc.info)
    cookie, csrf = web.sign_in(platform.proc.info["admin_token"])
    pkg = platform.api.create_package(file=str(firmware), version="2.0.0")
    body = json.dumps({"package": pkg["id"], "name": "csrf"}).encode()
    json_headers = {"Cookie": cookie, "Content-Type": "application/json"}
    wrong = csrf[:-1] + ("x" if csrf[-1] != "x" else "y")  # differs from the real token
    for extra in ({}, {"X-CSRF-Token": ""}, {"X-CSRF-Token": wrong}):
        status, _, answer = web.request("POST", "/api/tasks", body, {**json_headers, **extra})
        assert status == 403 and b"CSRF" in answer, (status, answer)
    # a form-encoded or plain-text cross-site post is refused the same way
    status, _, _ = web.request("POST", "/api/packages?version=3.0.0", os.urandom(1000),
                               {"Cookie": cookie, "Content-Type": "text/plain"})
    assert status == 403
    assert platform.api.list_tasks() == [] and len(platform.api.list_packages()) == 1
    status, _, answer = web.request("POST", "/api/tasks", body,
                                    {**json_headers, "X-CSRF-Token": csrf})
    assert status == 201, answer
    assert [t["name"] for t in platform.api.list_tasks()] == ["csrf"]


def test_oversized_upload_refused(platform: Any) -> None:
    web = Http(platform.proc.info)
    cookie, csrf = web.sign_in(platform.proc.info["admin_token"])
    conn = http.client.HTTPConnection(web.host, web.port, timeout=30)
    try:  # announces 64 MiB + 1 and sends a little: refused before the body is read
        conn.putrequest("POST", "/api/packages?version=9.9.9")
        for k, v in {"Cookie": cookie, "X-CSRF-Token": csrf,
                     "Content-Type": "application/octet-stream",
                     "Content-Length": str((64 << 20) + 1)}.items():
            conn.putheader(k, v)
        conn.endheaders()
        conn.send(b"\0" * 65536)
        resp = conn.getresponse()
        assert resp.status == 413, resp.read()
    finally:
        conn.close()
    assert platform.api.list_packages() == []


def test_html_from_devices_and_operators_is_text(platform: Any, page: Any,
                                                 firmware: Path) -> None:
    """Task names, descriptions and device reports full of markup show as the characters
    they are; no script of theirs runs."""
    info = platform.proc.info
    evil = '<img src=x onerror="window.__pwned=1"><b>bold</b>'
    api = platform.api
    pkg = api.create_package(file=str(firmware), version="2.0.0")
    task = api.create_task(package=pkg["id"], name="Name " + evil, desc="Desc " + evil)
    device = FakeDevice("dev-html", platform.broker).start()
    try:
        api.add_devices(task["id"], ["dev-html"])
        api.start_task(task["id"])
        notice = device.wait_notice(20)
        assert http_get(device.download_url(notice))[0] == 200
        device.progress(notice["taskId"], 20, "Report " + evil)
        sign_in(page, info)
        page.goto(f"{info['api']}/console#/tasks/{task['id']}")
        row = page.locator('tr[data-device="dev-html"]')
        expect(row).to_contain_text("Report " + evil, timeout=20_000)
        expect(page.get_by_role("heading", name="Name " + evil)).to_be_visible()
        expect(page.get_by_text("Desc " + evil)).to_be_visible()
        # a device id with markup is refused, and the refusal shows it as text
        page.get_by_label("Device ids").fill("<script>window.__pwned=2</script>")
        page.get_by_role("button", name="Add devices").click()
        expect(page.get_by_text("refused: <script>window.__pwned=2</script>")).to_be_visible()
        page.get_by_role("link", name="Tasks", exact=True).click()
        expect(page.get_by_role("link", name=f"#{task['id']} Name {evil}")).to_be_visible()
        assert page.locator("main img, main b, main script").count() == 0
        assert page.evaluate("window.__pwned") is None
        assert page.errors == []
    finally:
        device.stop()
