"""Admin API details: remote package source, bad bodies, broker restart."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
import urllib.request
from pathlib import Path

import pytest
from fota_host.platform.validate import PlatformError
from platform_fakes import Env, FakeDevice, device_row, make_task, wait_device_state, wait_for


@pytest.fixture
def file_server(firmware: Path):
    handler = lambda *a, **kw: http.server.SimpleHTTPRequestHandler(  # noqa: E731
        *a, directory=str(firmware.parent), **kw)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_package_from_url_is_fetched_once(embedded, firmware: Path, file_server: str) -> None:
    embedded.start()
    api = embedded.api
    pkg = api.create_package(url=f"{file_server}/{firmware.name}", version="2.0.0",
                             sign="sha256")
    assert pkg["sha256"] == hashlib.sha256(firmware.read_bytes()).hexdigest()
    assert pkg["source"].endswith(firmware.name)
    stored = embedded.data / "packages" / f"{pkg['id']}.bin"
    assert stored.read_bytes() == firmware.read_bytes()
    with pytest.raises(PlatformError, match="could not fetch"):
        api.create_package(url=f"{file_server}/missing.bin", version="3.0.0")
    assert len(api.list_packages()) == 1


def test_bad_bodies_get_400(embedded) -> None:
    embedded.start()
    info = embedded.proc.info

    def post(path: str, data: bytes, ctype: str = "application/json") -> tuple[int, dict]:
        req = urllib.request.Request(info["api"] + path, data=data, method="POST", headers={
            "Authorization": f"Bearer {info['admin_token']}", "Content-Type": ctype})
        try:
            with urllib.request.urlopen(req) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    assert post("/api/tasks", b"{not json")[0] == 400
    assert post("/api/tasks", b"[1, 2]")[0] == 400
    status, body = post("/api/tasks", json.dumps({"package": 5, "name": "x"}).encode())
    assert status == 404 and "unknown package" in body["error"]
    status, body = post("/api/tasks/1/devices", json.dumps({"devices": "abc"}).encode())
    assert status == 400 and "devices" in body["error"]
    status, body = post("/api/packages", b"x" * 10, "application/octet-stream")
    assert status == 400 and "version" in body["error"]
    status, body = post("/api/tasks/abc/start", b"{}")
    assert status == 400 and "integer" in body["error"]


def test_platform_survives_broker_restart(tmp_path: Path, firmware: Path) -> None:
    env = Env("mosquitto", tmp_path)
    try:
        env.start(device_timeout=30)
        api = env.api
        _, task = make_task(api, firmware, ["blip-1"], "blip")
        dev = FakeDevice("blip-1", env.broker).start()
        try:
            api.start_task(task["id"])
            notice = dev.wait_notice()
            dev.progress(notice["taskId"], 30, "downloading")
            wait_for(lambda: device_row(api, task["id"], "blip-1")["step"] == 30)
            env.mosquitto.restart(down_seconds=0.5)
            # Both reconnect (mosquitto runs without persistence: nothing is kept for
            # either). Once both are back, the device informs -1 and gets the notice
            # again, with the same token.
            log = env.proc.log_path
            wait_for(lambda: log.read_text().count("connected to broker") >= 2, timeout=20,
                     what="the platform back on the broker")
            wait_for(dev.connected.is_set, timeout=20, what="the device back on the broker")
            again = wait_for(lambda: dev.inform(-1) or dev.next_notice(1.0), timeout=20,
                             interval=0, what="the notice again")
            assert again["taskId"] == notice["taskId"]
            assert again["payload"]["token"] == notice["payload"]["token"]
            dev.upgrade(again)
            wait_device_state(api, task["id"], "blip-1", "succeeded")
        finally:
            dev.stop()
    finally:
        env.stop()
