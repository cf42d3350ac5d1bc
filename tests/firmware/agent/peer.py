"""A scripted CPython stand-in for the CTWing platform, checking every device message.

It subscribes to the devices' /ota/inform and /ota/progress topics through a real
broker, validates each message against the spec's exact shapes, and publishes
upgrade notices.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho


def check_inform(msg: Any) -> None:
    assert isinstance(msg, dict) and set(msg) == {"taskId", "params"}, msg
    assert type(msg["taskId"]) is int, msg
    params = msg["params"]
    assert isinstance(params, dict) and set(params) == {"version", "module"}, msg
    assert isinstance(params["version"], str) and isinstance(params["module"], str), msg


def check_progress(msg: Any) -> None:
    assert isinstance(msg, dict) and set(msg) == {"taskId", "params"}, msg
    assert type(msg["taskId"]) is int, msg
    params = msg["params"]
    assert isinstance(params, dict) and set(params) == {"step", "desc", "module"}, msg
    step = params["step"]
    assert type(step) is int and (1 <= step <= 100 or step in (-1, -2, -3, -4)), msg
    assert isinstance(params["desc"], str) and isinstance(params["module"], str), msg


class Peer:
    def __init__(self, port: int, prefix: str = "devices/+") -> None:
        self.messages: list[tuple[float, str, str, dict]] = []
        self.errors: list[str] = []
        self.lock = threading.Condition()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="peer")
        self.client.on_message = self._on_message
        self.client.on_connect = self._on_connect
        # "connected" means subscribed (SUBACK): a device started after the Peer is ready
        # cannot inform before the broker routes its topics here
        self.client.on_subscribe = lambda *_: self.connected.set()
        self.client.on_disconnect = lambda *_: self.connected.clear()
        self.prefix = prefix
        self.connected = threading.Event()
        # back quickly after a broker restart: a device's inform must not beat its subscription
        self.client.reconnect_delay_set(0.05, 0.2)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not self.connected.wait(10):
            raise TimeoutError("peer could not connect and subscribe to the broker")

    def _on_connect(self, client: paho.Client, *_: Any) -> None:
        # Subscribed again on every connect: the broker may have restarted.
        client.subscribe([(f"{self.prefix}/ota/inform", 1), (f"{self.prefix}/ota/progress", 1)])

    def _on_message(self, _c: Any, _u: Any, m: paho.MQTTMessage) -> None:
        kind = m.topic.rsplit("/", 1)[-1]
        device = m.topic.split("/")[1] if m.topic.startswith("devices/") else ""
        try:
            msg = json.loads(m.payload)
            (check_inform if kind == "inform" else check_progress)(msg)
        except (ValueError, AssertionError) as exc:
            self.errors.append(f"{m.topic}: {m.payload!r}: {exc}")
            return
        with self.lock:
            self.messages.append((time.monotonic(), device, kind, msg))
            self.lock.notify_all()

    def of(self, kind: str, device: str | None = None) -> list[dict]:
        with self.lock:
            return [m for _, d, k, m in self.messages
                    if k == kind and (device is None or d == device)]

    def wait(self, pred: Callable[[], Any], timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                got = pred()
                if got:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"not seen in {timeout}s; messages: {self.messages}")
                self.lock.wait(min(left, 0.2))

    def wait_for(self, kind: str, device: str, match: Callable[[dict], bool],
                 timeout: float = 30.0) -> dict:
        return self.wait(lambda: next((m for m in self.of(kind, device) if match(m)), None),
                         timeout)

    def notice(self, device: str, task: int, payload: dict[str, Any] | str | bytes) -> None:
        body = payload if isinstance(payload, (str, bytes)) else json.dumps(
            {"taskId": task, "payload": payload})
        self.client.publish(f"devices/{device}/ota/upgrade", body, qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def payload_for(img: dict, version: str, url: str, token: str = "tok en/1",
                module: str = "MCU", **extra: Any) -> dict[str, Any]:
    return {"size": img["size"], "version": version, "url": url, "md5": img["md5"],
            "token": token, "module": module, **extra}
