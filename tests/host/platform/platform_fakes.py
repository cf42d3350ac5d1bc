"""Fake devices for the platform tests: CPython + paho-mqtt, speaking the spec's messages."""

from __future__ import annotations

import hashlib
import json
import queue
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from fota_host.platform.process import start_platform
from helpers import Mosquitto, wait_for  # noqa: F401 (re-exported for the tests)


def broker_addr(url: str) -> tuple[str, int, str | None, str | None]:
    p = urllib.parse.urlsplit(url)
    return p.hostname or "127.0.0.1", p.port or 1883, p.username, p.password


class FakeDevice:
    """A device: subscribes to its upgrade topic, informs its version on connect, downloads
    with the spec's address, reports progress, and informs the new version."""

    def __init__(self, device_id: str, broker_url: str, version: str = "1.0.0",
                 prefix: str = "devices/{device}", username: str | None = None,
                 password: str | None = None, inform_on_connect: bool = True) -> None:
        self.id = device_id
        self.version = version
        self.base = prefix.format(device=device_id)
        self.notices: queue.Queue[dict[str, Any]] = queue.Queue()
        self.raw: list[bytes] = []
        self.inform_on_connect = inform_on_connect
        self.connected = threading.Event()
        self.connect_rc: Any = None
        host, port, user, pw = broker_addr(broker_url)
        self.host, self.port = host, port
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"dev-{device_id}")
        if username or user:
            self.client.username_pw_set(username or user, password or pw)
        self.client.reconnect_delay_set(0.1, 1)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_disconnect = lambda *a: self.connected.clear()

    # -- MQTT ---------------------------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any,
                    props: Any = None) -> None:
        self.connect_rc = rc
        if rc.is_failure:
            return
        client.subscribe(self.base + "/ota/upgrade", qos=1)

    def _on_subscribe(self, *args: Any) -> None:
        pass

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.raw.append(msg.payload)
        self.notices.put(json.loads(msg.payload))

    def start(self, timeout: float = 10.0) -> FakeDevice:
        subscribed = threading.Event()

        def on_subscribe(*args: Any) -> None:
            subscribed.set()
            self.connected.set()
            if self.inform_on_connect:  # no waiting inside paho's callback thread
                self.inform(-1, wait=False)

        self.client.on_subscribe = on_subscribe
        self.client.connect_async(self.host, self.port, keepalive=10)
        self.client.loop_start()
        if not subscribed.wait(timeout):
            raise TimeoutError(f"{self.id}: not connected/subscribed (rc {self.connect_rc})")
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def publish(self, kind: str, msg: Any, raw: bytes | None = None, wait: bool = True) -> None:
        payload = raw if raw is not None else json.dumps(msg).encode()
        info = self.client.publish(f"{self.base}/ota/{kind}", payload, qos=1)
        if wait:
            info.wait_for_publish(10)

    def inform(self, task_id: int, version: str | None = None, wait: bool = True) -> None:
        self.publish("inform", {"taskId": task_id,
                                "params": {"version": version or self.version, "module": "MCU"}},
                     wait=wait)

    def progress(self, task_id: int, step: int, desc: str = "") -> None:
        self.publish("progress", {"taskId": task_id,
                                  "params": {"step": step, "desc": desc, "module": "MCU"}})

    def wait_notice(self, timeout: float = 10.0) -> dict[str, Any]:
        return self.notices.get(timeout=timeout)

    def next_notice(self, timeout: float) -> dict[str, Any] | None:
        try:
            return self.notices.get(timeout=timeout)
        except queue.Empty:
            return None

    def no_notice(self, seconds: float) -> bool:
        try:
            self.notices.get(timeout=seconds)
        except queue.Empty:
            return True
        return False

    # -- HTTP ---------------------------------------------------------------------------
    def download_url(self, notice: dict[str, Any], device: str | None = None,
                     token: str | None = None) -> str:
        url = notice["payload"]["url"]
        base, file_id, url_task = url.rsplit("/", 2)
        query = urllib.parse.urlencode({
            "fileId": file_id, "taskId": url_task, "deviceId": device or self.id,
            "accessToken": notice["payload"]["token"] if token is None else token})
        return f"{base}?{query}"

    def upgrade(self, notice: dict[str, Any], steps: tuple[int, ...] = (10, 50, 100)) -> bytes:
        """Download and verify the image, report progress, 'reboot' and inform."""
        status, body, _ = http_get(self.download_url(notice))
        assert status == 200, status
        payload = notice["payload"]
        assert len(body) == payload["size"]
        assert hashlib.md5(body).hexdigest() == payload["md5"]
        if "sha256" in payload:
            assert hashlib.sha256(body).hexdigest() == payload["sha256"]
        for step in steps:
            self.progress(notice["taskId"], step, f"step {step}")
        self.version = payload["version"]
        self.inform(notice["taskId"])
        return body


def http_get(url: str, headers: dict[str, str] | None = None,
             timeout: float = 10.0) -> tuple[int, bytes, dict[str, str]]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def make_task(client: Any, firmware: Path, devices: list[str], name: str | None = None, *,
              version: str = "2.0.0", **package: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A package of `firmware` (`package`: more of create_package's options), a task of it
    named `name` (default "to VERSION") and `devices` added to it, each accepted."""
    pkg = client.create_package(file=str(firmware), version=version, **package)
    task = client.create_task(package=pkg["id"], name=name or f"to {version}")
    results = client.add_devices(task["id"], devices)
    assert all(r["ok"] for r in results), results
    return pkg, task


class Recorder:
    """A platform's `publish` for tests that drive it in-process: what it sent, decoded."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, topic: str, payload: bytes) -> None:
        self.sent.append((topic, json.loads(payload)))


def device_row(client: Any, task_id: int, device: str) -> dict[str, Any]:
    task = client.get_task(task_id)
    return next(d for d in task["devices"] if d["device"] == device)


def wait_device_state(client: Any, task_id: int, device: str, state: str,
                      timeout: float = 10.0) -> dict[str, Any]:
    return wait_for(lambda: (row := device_row(client, task_id, device))["state"] == state
                    and row, timeout, what=f"{device} {state}")


class Env:
    """A platform on a real broker (embedded amqtt or mosquitto) in a temp folder."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        self.tmp = tmp_path
        self.data = tmp_path / "data"
        self.mosquitto: Mosquitto | None = None
        self.proc: Any = None
        self.options: dict[str, Any] = {}
        if kind == "mosquitto":
            (tmp_path / "mq").mkdir()
            self.mosquitto = Mosquitto(tmp_path / "mq").start()

    def start(self, **options: Any) -> Any:
        self.options = options or self.options
        broker = self.mosquitto.url if self.mosquitto else None
        self.proc = start_platform(self.data, broker=broker, **self.options)
        return self.proc

    @property
    def broker(self) -> str:
        return self.proc.broker

    @property
    def api(self) -> Any:
        return self.proc.client()

    def stop(self) -> None:
        if self.proc:
            self.proc.stop()
        if self.mosquitto:
            self.mosquitto.stop()


def fota(*args: str, ok: bool = True) -> Any:
    """Run the `fota` command (a child Python): with ok, assert it succeeded and return its
    JSON (or its text when it printed no JSON); without, return the finished process."""
    import os
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "fota_host", *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "COLUMNS": "200"})
    assert "Traceback" not in proc.stderr
    if ok:
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout) if proc.stdout.lstrip().startswith(("{", "[")) \
            else proc.stdout
    return proc
