"""`fota platform mosquitto-config` against the real mosquitto: each device reaches only its
own topics; the platform reaches all, and a whole upgrade runs through it."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from fota_host.platform.mosquitto import generate
from fota_host.platform.process import start_platform
from fota_host.platform.validate import PlatformError
from helpers import free_port, mosquitto_bin, wait_port
from platform_fakes import FakeDevice, make_task, wait_device_state


def _client(port: int, user: str, password: str, cid: str):
    got: queue.Queue = queue.Queue()
    status: queue.Queue = queue.Queue()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid)
    c.username_pw_set(user, password)
    c.on_connect = lambda cl, u, f, rc, p=None: status.put(rc)
    c.on_message = lambda cl, u, m: got.put((m.topic, m.payload))
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c, got, status.get(timeout=5)


def _subscribe(c: mqtt.Client, topic: str) -> list:
    done: queue.Queue = queue.Queue()
    c.on_subscribe = lambda cl, u, mid, codes, p=None: done.put(codes)
    c.subscribe(topic, qos=1)
    return done.get(timeout=5)


@pytest.fixture
def acl_broker(tmp_path: Path):
    port = free_port()
    out = tmp_path / "mq"
    # mosquitto started as root drops to user mosquitto, which can't read the 0600 files
    run_as = ["--run-as", "root"] if os.geteuid() == 0 else []
    result = subprocess.run(
        [sys.executable, "-c", "from fota_host.cli import main; main()", "platform",
         "mosquitto-config", "--out", str(out), "--device", "dev-1", "--device", "dev-2",
         "--port", str(port), "--bind", "127.0.0.1", *run_as],
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    proc = subprocess.Popen([mosquitto_bin(), "-c", info["config"]],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    creds = json.loads((out / "credentials.json").read_text())
    yield port, info, creds
    proc.terminate()
    proc.wait(5)


def test_devices_reach_only_their_own_topics(acl_broker) -> None:
    port, info, creds = acl_broker
    plat = creds["platform"]
    pc, pgot, rc = _client(port, plat["username"], plat["password"], "plat")
    assert not rc.is_failure
    _subscribe(pc, "devices/+/ota/+")
    d1, d1got, rc1 = _client(port, "dev-1", creds["devices"]["dev-1"], "d1")
    assert not rc1.is_failure
    # wrong password and unknown user are refused
    for user, pw in (("dev-1", "wrong"), ("dev-9", "x"), ("dev-1", creds["devices"]["dev-2"])):
        c, _, bad = _client(port, user, pw, f"bad-{user}-{pw[:3]}")
        assert bad.is_failure
        c.loop_stop()
    # dev-1 cannot read dev-2's notices, not even through a wildcard (mosquitto 2.0 may
    # grant the subscription; the ACL is applied when messages are delivered)
    _subscribe(d1, "devices/dev-2/ota/upgrade")
    _subscribe(d1, "devices/+/ota/#")
    assert not _subscribe(d1, "devices/dev-1/ota/upgrade")[0].is_failure
    pc.publish("devices/dev-2/ota/upgrade", b"secret for dev-2", qos=1).wait_for_publish(5)
    pc.publish("devices/dev-1/ota/upgrade", b"for dev-1", qos=1).wait_for_publish(5)
    assert d1got.get(timeout=5) == ("devices/dev-1/ota/upgrade", b"for dev-1")
    time.sleep(0.3)
    assert d1got.empty()
    # dev-1 cannot speak for dev-2
    d1.publish("devices/dev-2/ota/inform", b"forged", qos=1).wait_for_publish(5)
    d1.publish("devices/dev-1/ota/inform", b"genuine", qos=1).wait_for_publish(5)
    # Same connection, so a forged message the ACL let through would arrive first. The
    # platform's client also gets its own two notices back (devices/+/ota/+): wait for
    # the genuine report itself, not for the first message (a loaded machine delivered
    # the report after the echo plus a fixed 0.3 s).
    genuine = ("devices/dev-1/ota/inform", b"genuine")
    received: list = []
    deadline = time.monotonic() + 30
    while genuine not in received and time.monotonic() < deadline:
        with contextlib.suppress(queue.Empty):
            received.append(pgot.get(timeout=0.5))
    while not pgot.empty():
        received.append(pgot.get())
    reports = [m for m in received if m[0].endswith("/inform")]
    assert reports == [("devices/dev-1/ota/inform", b"genuine")]
    for c in (pc, d1):
        c.disconnect()
        c.loop_stop()


def test_platform_upgrade_through_acl_broker(acl_broker, tmp_path: Path,
                                             firmware: Path) -> None:
    port, info, creds = acl_broker
    proc = start_platform(tmp_path / "data", broker=info["platform_broker"])
    try:
        api = proc.client()
        _, task = make_task(api, firmware, ["dev-1"], "acl")
        dev = FakeDevice("dev-1", f"mqtt://127.0.0.1:{port}", username="dev-1",
                         password=creds["devices"]["dev-1"]).start()
        try:
            api.start_task(task["id"])
            dev.upgrade(dev.wait_notice())
            wait_device_state(api, task["id"], "dev-1", "succeeded")
        finally:
            dev.stop()
        assert ":" in proc.broker and "@" not in proc.broker  # no password in service.json
    finally:
        proc.stop()


def test_generator_keeps_passwords_and_rejects_bad_ids(tmp_path: Path) -> None:
    first = generate(tmp_path, ["a1"], port=18830)
    creds = json.loads((tmp_path / "credentials.json").read_text())
    second = generate(tmp_path, ["a1", "b2"], port=18830)
    creds2 = json.loads((tmp_path / "credentials.json").read_text())
    assert creds2["devices"]["a1"] == creds["devices"]["a1"]
    assert second["devices"] == ["a1", "b2"]
    assert first["platform_broker"] == second["platform_broker"]
    acl = (tmp_path / "acl").read_text()
    assert "pattern read devices/%u/ota/upgrade" in acl
    assert (tmp_path / "passwd").stat().st_mode & 0o077 == 0
    for bad in (["a/b"], ["+"], ["#"], ["x" * 65], ["fota-platform"]):
        with pytest.raises(PlatformError):
            generate(tmp_path / "bad", bad)


@pytest.mark.parametrize("option, value", [
    ("bind", "127.0.0.1\nlistener 1 0.0.0.0"),  # would add an all-interfaces listener
    ("bind", "127.0.0.1 # evil"),
    ("bind", ""),
    ("bind", "-host"),
    ("run_as", "root\nallow_anonymous true"),
    ("run_as", "a b"),
])
def test_generator_refuses_values_that_would_add_config_lines(tmp_path: Path, option: str,
                                                              value: str) -> None:
    """Every value written into mosquitto.conf is one line's word: a newline or a space in
    it is refused before any file is written, so no listener or setting can be smuggled in."""
    with pytest.raises(PlatformError, match="--" + option.replace("_", "-")):
        generate(tmp_path / "out", ["a1"], **{option: value})
    assert not (tmp_path / "out" / "mosquitto.conf").exists()


def test_generator_refuses_a_certificate_path_with_a_newline(tmp_path: Path) -> None:
    cert = tmp_path / "c\nallow_anonymous true.pem"
    cert.write_text("x")
    with pytest.raises(PlatformError, match="--certfile"):
        generate(tmp_path / "out", ["a1"], certfile=str(cert), keyfile=str(cert))
    assert not (tmp_path / "out" / "mosquitto.conf").exists()


def test_generator_gives_a_usable_broker_url_for_each_kind_of_bind(tmp_path: Path) -> None:
    """The listener line and the printed --broker URL agree for IPv4, IPv6 and host names
    (an IPv6 host goes in brackets, RFC 3986 section 3.2.2)."""
    from urllib.parse import urlsplit

    for bind, host in (("127.0.0.1", "127.0.0.1"), ("::1", "::1"),
                       ("localhost", "localhost"), ("0.0.0.0", "127.0.0.1")):
        out = generate(tmp_path / bind.replace(":", "_"), ["a1"], port=18830, bind=bind)
        assert f"listener 18830 {bind}\n" in Path(out["config"]).read_text()
        url = urlsplit(out["platform_broker"])
        assert (url.hostname, url.port) == (host, 18830)


def test_cli_names_the_bad_bind(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "fota_host", "platform", "mosquitto-config",
                           "--out", str(tmp_path / "o"), "--device", "a1",
                           "--bind", "127.0.0.1\nlistener 1 0.0.0.0"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "--bind" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o" / "mosquitto.conf").exists()
