"""Data at the platform's edges (#12.2, #12.11, #12.16, #12.17): device text checked before
it reaches the store, one device-id rule everywhere, owner-only files, no upload leftovers."""

from __future__ import annotations

import json
import socket
import stat
import threading
import time
import urllib.parse
from pathlib import Path

import pytest
from fota_host.boards.provision import ProvisionError, build_config
from fota_host.platform.mosquitto import generate
from fota_host.platform.validate import PlatformError
from platform_fakes import FakeDevice, device_row, wait_device_state, wait_for


def test_bad_device_text_cannot_roll_back_other_devices(env, firmware: Path) -> None:
    """A lone surrogate version (valid JSON, invalid Unicode) every 20 ms, next to two
    upgrading devices whose progress is batched: they still succeed, the bad messages are
    dropped with a few rate-limited lines and no tracebacks."""
    env.start(device_timeout=2)
    api = env.api
    pkg = api.create_package(file=str(firmware), version="2.0.0")
    task = api.create_task(package=pkg["id"], name="edge")
    api.add_devices(task["id"], ["good-1", "good-2", "evil"])
    good = [FakeDevice(d, env.broker).start() for d in ("good-1", "good-2")]
    evil = FakeDevice("evil", env.broker).start()
    stop = threading.Event()
    sent = [0]
    bad = [json.dumps({"taskId": -1, "params": {"version": "\udfff"}}).encode(),
           json.dumps({"taskId": -1, "params": {"version": "1\x1b[2J"}}).encode(),
           json.dumps({"taskId": -1, "params": {"version": "1", "module": "m\ud800"}}).encode()]

    def flood() -> None:
        while not stop.is_set():
            evil.publish("inform", None, raw=bad[sent[0] % len(bad)], wait=False)
            sent[0] += 1
            time.sleep(0.02)

    flooder = threading.Thread(target=flood, daemon=True)
    try:
        api.start_task(task["id"])
        notices = [d.wait_notice() for d in good]
        evil_notice = evil.wait_notice()
        flooder.start()
        # 4 s of batched progress with a 2 s device timeout: progress lost to a rollback
        # would time the devices out
        for step in range(5, 85, 4):
            for dev, notice in zip(good, notices, strict=True):
                dev.progress(notice["taskId"], step, f"downloading {step}%")
            time.sleep(0.2)
        # a desc with invalid Unicode and control characters is kept, cleaned
        evil.progress(evil_notice["taskId"], 7, "bad \udfff text \x1b[31m")
        for dev, notice in zip(good, notices, strict=True):
            dev.upgrade(notice)
        for dev in good:
            assert wait_device_state(api, task["id"], dev.id, "succeeded")["desc"] \
                == "upgraded to 2.0.0"
        row = wait_for(lambda: (r := device_row(api, task["id"], "evil"))["step"] == 7 and r)
        assert row["desc"] == "bad \ufffd text \ufffd[31m"
    finally:
        stop.set()
        for dev in (*good, evil):
            dev.stop()
    assert sent[0] > 100
    log = (env.data / "platform.log").read_text(errors="replace")
    dropped = [line for line in log.splitlines() if "dropped message on devices/evil" in line]
    assert 1 <= len(dropped) <= 6, dropped  # a few lines per 10 s per device, then a count
    assert "lone surrogate" in log or "not valid Unicode" in log
    assert "Traceback" not in log


BAD_IDS = ["dev-1\n", "dev 1", " dev-1", "_dev", "dev/1", "dev+1", "dev#", "d" * 65, "dév",
           ""]


def test_one_device_id_rule_at_every_entry_point(embedded, tmp_path: Path) -> None:
    embedded.start()
    api = embedded.api
    firmware = tmp_path / "fw.bin"
    firmware.write_bytes(b"\x01" * 1000)
    pkg = api.create_package(file=str(firmware), version="2.0.0")
    task = api.create_task(package=pkg["id"], name="ids")
    res = api.add_devices(task["id"], ["ok-1", "OK.2:x_y", *BAD_IDS])
    assert [r["ok"] for r in res] == [True, True] + [False] * len(BAD_IDS)
    for r in res[2:]:
        assert "a letter or digit first" in r["error"], r
    res = api.import_devices(task["id"], "device\nok-3\ndev 3\nok-4\n")
    assert [(r["device"], r["ok"]) for r in res] == [("ok-3", True), ("dev 3", False),
                                                     ("ok-4", True)]
    for bad in BAD_IDS:
        with pytest.raises(PlatformError, match="letter or digit first"):
            generate(tmp_path / "mq", ["ok-1", bad])
        with pytest.raises(ProvisionError, match="letter or digit first"):
            build_config(bad, "broker.local")
    assert not (tmp_path / "mq" / "passwd").exists()
    assert build_config("ok-1", "broker.local")["device_id"] == "ok-1"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_data_folder_is_owner_only(embedded, firmware: Path) -> None:
    embedded.data.mkdir(mode=0o755)  # an existing folder too loose: tightened
    embedded.start()
    pkg = embedded.api.create_package(file=str(firmware), version="2.0.0")
    data = embedded.data
    assert _mode(data) == 0o700
    assert _mode(data / "packages") == 0o700
    for name in ("platform.db", "service.json", "admin.token", "platform.log",
                 f"packages/{pkg['id']}.bin"):
        assert _mode(data / name) == 0o600, name
    for extra in data.glob("platform.db-*"):
        assert _mode(extra) == 0o600, extra


def test_upload_killed_midway_leaves_nothing_after_restart(embedded) -> None:
    proc = embedded.start()
    api = urllib.parse.urlsplit(proc.api)
    sock = socket.create_connection((api.hostname, api.port))
    try:
        head = (f"POST /api/packages?version=2.0.0 HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {proc.admin_token}\r\n"
                "Content-Type: application/octet-stream\r\nContent-Length: 2000000\r\n\r\n")
        sock.sendall(head.encode() + b"\x00" * 300_000)
        packages = embedded.data / "packages"
        wait_for(lambda: any(p.stat().st_size > 0 for p in packages.glob(".upload-*")),
                 what="an upload file being written")
        proc.kill()  # kill -9 mid-upload
    finally:
        sock.close()
    assert list(packages.glob(".upload-*"))
    # the same kind: a service killed while writing service.json or admin.token, a restore
    # killed while unpacking
    others = [embedded.data / ".service.json.4242.tmp", embedded.data / "admin.tmp"]
    for other in others:
        other.write_text("{")
    (embedded.data / ".restore-x1y2").mkdir()
    (embedded.data / ".restore-x1y2" / "platform.db").write_bytes(b"half")
    proc.start()
    assert not list(packages.glob(".upload-*"))
    assert not any(o.exists() for o in others) and not (embedded.data / ".restore-x1y2").exists()
    assert "interrupted upload" in (embedded.data / "platform.log").read_text()
    assert proc.client().list_packages() == []


def test_operator_text_that_is_not_unicode_is_refused_not_a_500(embedded, firmware: Path) -> None:
    embedded.start()
    api = embedded.api
    pkg = api.create_package(file=str(firmware), version="2.0.0")
    for bad in ("\udfff", "name\x1b[2J"):
        with pytest.raises(PlatformError, match="printable characters") as err:
            api.create_task(package=pkg["id"], name=bad)
        assert err.value.status == 400
    task = api.create_task(package=pkg["id"], name="ok")
    res = api.add_devices(task["id"], ["dev-\udfff"])
    assert not res[0]["ok"] and "letter or digit first" in res[0]["error"]
    assert "Traceback" not in (embedded.data / "platform.log").read_text()
