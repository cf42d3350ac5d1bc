"""`fota sim swarm` against the real platform on a real mosquitto (SQLite store), and one
swarm device against a scripted platform: the protocol exactly as the agent speaks it."""

from __future__ import annotations

import hashlib
import json
import os
import queue
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from fota_host.platform.mosquitto import generate
from fota_host.platform.process import start_platform
from fota_host.sim.imageserver import ImageServer
from fota_host.sim.swarm import SwarmOptions, SwarmResult, device_ids, run_swarm
from helpers import free_port, mosquitto_bin, wait_for, wait_port

KEYS = ["devices", "upgraded", "failed", "duplicate_notices", "seconds"]


def swarm_cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fota_host", "sim", "swarm", *args],
                          capture_output=True, text=True, timeout=timeout)


def swarm_with_task(platform: Any, tmp_path: Path, ids: list[str], *args: str,
                    timeout: float = 240) -> tuple[subprocess.CompletedProcess[str], int]:
    """The swarm started first; once the platform has heard every device, a task to 2.0.0
    for them (as in the field: devices online, then a rollout, so each gets one notice)."""
    proc = subprocess.Popen([sys.executable, "-m", "fota_host", "sim", "swarm", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        api = platform.client()
        wait_for(lambda: {d["id"] for d in api.list_devices()} >= set(ids), timeout,
                 what="every swarm device informed")
        task_id = start_task(platform, tmp_path, ids)
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), task_id


@pytest.fixture
def platform(tmp_path: Path, mosquitto: Any):
    proc = start_platform(tmp_path / "data", broker=mosquitto.url, push_rate=60000,
                          timeout=90)
    yield proc
    proc.stop()


def start_task(platform: Any, tmp_path: Path, ids: list[str], sign: str = "md5") -> int:
    """Package 2.0.0 (random 96 KB), a task for `ids`, started."""
    fw = tmp_path / "fw-2.0.0.bin"
    fw.write_bytes(os.urandom(96_000))
    api = platform.client()
    pkg = api.create_package(version="2.0.0", file=str(fw), sign=sign)
    task = api.create_task(package=pkg["id"], name="swarm")
    api.add_devices(task["id"], ids)
    api.start_task(task["id"])
    return task["id"]


def json_line(run: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    lines = run.stdout.splitlines()
    assert len(lines) == 1, run.stdout + run.stderr
    out = json.loads(lines[0])
    assert list(out)[:5] == KEYS
    return out


def test_device_ids_are_prefix_and_zero_padded_number() -> None:
    assert device_ids("swarm-", 3) == ["swarm-00001", "swarm-00002", "swarm-00003"]
    assert device_ids("x", 123456)[-1] == "x123456"


def test_swarm_of_50_upgrades_every_device_once(platform: Any, mosquitto: Any,
                                                tmp_path: Path) -> None:
    ids = device_ids("swarm-", 50)
    run, task_id = swarm_with_task(
        platform, tmp_path, ids, "--count", "50", "--broker", mosquitto.url, "--version",
        "1.0.0", "--until-version", "2.0.0", "--timeout", "180", "--slow-rate", "0.1",
        "--slow-bps", "200000")
    out = json_line(run)
    assert run.returncode == 0, run.stderr
    assert out["devices"] == 50 and out["upgraded"] == 50
    assert out["failed"] == 0 and out["duplicate_notices"] == 0
    assert out["notices"] == 50 and out["downloads"] == 50
    task = platform.client().get_task(task_id)
    assert sorted(d["device"] for d in task["devices"]) == ids
    assert Counter(d["state"] for d in task["devices"]) == {"succeeded": 50}
    versions = {d["id"]: d["version"] for d in platform.client().list_devices()}
    assert all(versions[d] == "2.0.0" for d in ids)
    # every progress message published (QoS 0 downloading steps, QoS 1 step 100) is counted
    # once, and the platform applied exactly those (bench_scaleout's "reports applied twice")
    assert list(out)[-1] == "progress_sent" and out["progress_sent"] >= 2 * 50
    api = platform.client()
    counted = wait_for(lambda: (n := api.call("GET", "/api/stats")["reports"])
                       >= out["progress_sent"] and n, 30, what="every progress report counted")
    assert counted == out["progress_sent"]


def test_fail_rate_fails_sub_tasks_and_exit_code(platform: Any, mosquitto: Any,
                                                 tmp_path: Path) -> None:
    ids = device_ids("f-", 20)
    run, task_id = swarm_with_task(
        platform, tmp_path, ids, "--count", "20", "--broker", mosquitto.url, "--id-prefix",
        "f-", "--until-version", "2.0.0", "--fail-rate", "0.25", "--timeout", "180")
    out = json_line(run)
    assert run.returncode == 1, run.stderr
    assert (out["upgraded"], out["failed"], out["duplicate_notices"]) == (15, 5, 0)
    task = platform.client().get_task(task_id)
    failed = [d for d in task["devices"] if d["state"] == "failed"]
    assert len(failed) == 5 and all(d["step"] == -3 for d in failed), failed
    assert all("md5 mismatch" in d["desc"] for d in failed), failed
    assert Counter(d["state"] for d in task["devices"])["succeeded"] == 15


@pytest.mark.parametrize("args, error", [
    (["--count", "0", "--broker", "mqtt://127.0.0.1:1883"], "'--count': 0 is not in the range"),
    (["--count", "2", "--broker", "http://127.0.0.1:1883"], "give mqtt://HOST:PORT"),
    (["--count", "2", "--broker", "mqtt://:1883"], "no host"),
    (["--count", "2", "--broker", "mqtt://127.0.0.1:99999"], "Port out of range"),
    (["--count", "3000000", "--broker", "mqtt://127.0.0.1:1883"], "file descriptors needed"),
    (["--count", "2", "--broker", "mqtt://127.0.0.1:1883", "--fail-rate", "2"], "--fail-rate"),
    (["--count", "2", "--broker", "mqtt://127.0.0.1:1883", "--keepalive", "100000"],
     "'--keepalive': 100000 is not in the range 5<=x<=65535"),
    (["--count", "2", "--broker", "mqtt://127.0.0.1:1883", "--timeout", "nan"],
     "--timeout must be a finite number (got nan)"),
    (["--count", "2", "--broker", "mqtt://127.0.0.1:1883", "--timeout", "inf"],
     "--timeout must be a finite number (got inf)"),
    (["--count", "2", "--broker", "mqtt://127.0.0.1:1883", "--connect-rate", "nan"],
     "--connect-rate must be a finite number"),
    (["--count", "2", "--broker", "mqtt://127.0.0.1:1883", "--start-delay", "nan"],
     "--start-delay must be a finite number"),
    (["--count", "2", "--broker", "mqtt://127.0.0.1:1883", "--reboot-delay", "inf"],
     "--reboot-delay must be a finite number"),
    (["--count", "2", "--broker", "mqtt://127.0.0.1:1883", "--id-prefix", "a/+/#"],
     "--id-prefix 'a/+/#': 1-32 characters"),
    (["--count", "2", "--broker", "mqtt://127.0.0.1:1883", "--id-prefix", ""],
     "--id-prefix '': 1-32 characters"),
    (["--count", "2", "--broker", "mqtt://127.0.0.1:1883", "--id-prefix", "x" * 33],
     "no '/', '+', '#'"),
])
def test_bad_arguments_are_clear_errors(args: list[str], error: str) -> None:
    run = swarm_cli(*args)
    assert run.returncode == 2 and run.stdout == ""
    assert error in run.stderr, run.stderr


def test_unreachable_broker_is_a_clear_error() -> None:
    port = free_port()      # nothing listens there
    run = swarm_cli("--count", "2", "--broker", f"mqtt://127.0.0.1:{port}")
    assert run.returncode == 2 and run.stdout == ""
    assert f"broker mqtt://127.0.0.1:{port} unreachable" in run.stderr, run.stderr


class ScriptedPlatform:
    """The platform's side by hand: paho on the devices' topics, every message kept."""

    def __init__(self, broker_port: int) -> None:
        self.messages: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="scripted")
        self.client.on_message = lambda _c, _u, m: self.messages.put(
            (m.topic.rsplit("/", 1)[1], json.loads(m.payload)))
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.connect("127.0.0.1", broker_port)
        self.client.subscribe("devices/+/ota/#", qos=1)
        self.client.loop_start()
        # Ready on SUBACK: a device started next cannot inform before its topics reach us.
        if not subscribed.wait(30):
            raise TimeoutError("the scripted platform could not subscribe")

    def next(self, kind: str, timeout: float = 60.0) -> dict[str, Any]:
        """The next message of `kind` (inform, progress), skipping the other kinds."""
        while True:
            got_kind, msg = self.messages.get(timeout=timeout)
            if got_kind == kind:
                return msg

    def notice(self, device: str, task: int, payload: dict[str, Any]) -> None:
        self.client.publish(f"devices/{device}/ota/upgrade",
                            json.dumps({"taskId": task, "payload": payload}), qos=1)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_one_device_speaks_the_protocol(tmp_path: Path, mosquitto: Any) -> None:
    """Inform, guide's address, a cut download reported -2 and resumed with Range on the
    next notice, progress 1..99 then 100, reboot and inform with the taskId, busy
    refusal, and a repeated notice counted as a duplicate."""
    image = os.urandom(100_000)
    (tmp_path / "fw.bin").write_bytes(image)
    plat = ScriptedPlatform(mosquitto.port)
    stop = threading.Event()
    results: list[SwarmResult] = []
    opts = SwarmOptions(count=1, broker=mosquitto.url, until_version="2.0.0", timeout=120,
                        slow_rate=1.0, slow_bps=40_000, settle=3600)
    with ImageServer(tmp_path) as server:
        server.faults.truncate_at, server.faults.truncate_once = 20_000, True
        runner = threading.Thread(target=lambda: results.append(run_swarm(opts, stop=stop)))
        runner.start()
        try:
            assert plat.next("inform") == {"taskId": -1,
                                           "params": {"version": "1.0.0", "module": "MCU"}}
            payload = {"size": len(image), "version": "2.0.0",
                       "url": server.notice_url("fw.bin", 3), "token": "a+b/c",
                       "md5": hashlib.md5(image).hexdigest(), "module": "MCU",
                       "sha256": hashlib.sha256(image).hexdigest()}
            plat.notice("swarm-00001", 7, payload)
            failed = plat.next("progress")
            while failed["params"]["step"] > 0:
                failed = plat.next("progress")
            assert failed["taskId"] == 7 and failed["params"]["step"] == -2
            assert "download failed" in failed["params"]["desc"]
            first = server.stats.requests[0]
            assert first["query"] == {"fileId": "fw.bin", "taskId": "3",
                                      "deviceId": "swarm-00001", "accessToken": "a+b/c"}
            assert "accessToken=a%2Bb%2Fc" in first["path"] and first["range"] is None

            plat.notice("swarm-00001", 7, payload)      # the platform's retry
            steps = [plat.next("progress")["params"]["step"]]
            plat.notice("swarm-00001", 8, payload)      # another task while busy
            while steps[-1] != 100:
                msg = plat.next("progress")
                if msg["taskId"] == 8:
                    assert msg["params"] == {"step": -1, "desc": "busy", "module": "MCU"}
                    continue
                steps.append(msg["params"]["step"])
            assert steps == sorted(steps) and 1 <= steps[0] and steps[-2] <= 99
            resumed_at = server.stats.requests[1]["range"]     # "bytes=N-", N > 0
            assert resumed_at.startswith("bytes=") and int(resumed_at[6:-1]) > 0
            assert plat.next("inform") == {"taskId": 7,
                                           "params": {"version": "2.0.0", "module": "MCU"}}
            plat.notice("swarm-00001", 7, payload)      # again: a duplicate
            assert plat.next("inform")["taskId"] == 7   # "I run it already"
        finally:
            stop.set()
            runner.join(60)
            plat.close()
    out = results[0].to_json()
    assert list(out)[:5] == KEYS
    assert (out["upgraded"], out["failed"], out["duplicate_notices"]) == (1, 0, 1)
    assert out["resumed"] == 1 and out["busy_refusals"] == 1 and out["stopped"]
    assert len(server.stats.requests) == 2


@pytest.fixture
def secured(tmp_path: Path):
    """mosquitto as `fota platform mosquitto-config` sets it up (logins, ACL per device),
    and the platform on it."""
    port = free_port()
    ids = device_ids("swarm-", 5)
    run_as = "root" if os.geteuid() == 0 else None
    info = generate(tmp_path / "mq", ids, port=port, bind="127.0.0.1", run_as=run_as)
    broker = subprocess.Popen([mosquitto_bin(), "-c", info["config"]],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    proc = start_platform(tmp_path / "data", broker=info["platform_broker"], push_rate=60000,
                          timeout=90)
    yield proc, port, ids, info["credentials"]
    proc.stop()
    broker.terminate()
    broker.wait(10)


def test_secured_broker_with_per_device_credentials(secured: Any, tmp_path: Path) -> None:
    platform, port, ids, credentials = secured
    url = f"mqtt://127.0.0.1:{port}"
    refused = swarm_cli("--count", "5", "--broker", url, "--username", "swarm-00001",
                        "--password", "wrong")
    assert refused.returncode == 2 and refused.stdout == ""
    assert f"broker {url} refused swarm-00001" in refused.stderr, refused.stderr
    run, task_id = swarm_with_task(platform, tmp_path, ids, "--count", "5", "--broker", url,
                                   "--credentials", credentials, "--until-version", "2.0.0")
    out = json_line(run)
    assert run.returncode == 0, run.stderr
    assert (out["upgraded"], out["failed"], out["duplicate_notices"]) == (5, 0, 0)
    task = platform.client().get_task(task_id)
    assert Counter(d["state"] for d in task["devices"]) == {"succeeded": 5}
