"""Shared subscriptions on a real mosquitto: the platform joins `$share/<group>/...`, takes
over the session of a member that died (nothing it was handed is lost), waits for the broker
with its notices, and refuses a share group on the embedded broker.

The multi-instance rollouts on PostgreSQL are in test_scaleout.py."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from fota_host.platform.options import Settings
from fota_host.platform.process import start_platform
from fota_host.platform.tasks import NOT_SENT
from fota_host.sim.faults import FaultProxy
from platform_fakes import (
    FakeDevice,
    Mosquitto,
    broker_addr,
    device_row,
    http_get,
    wait_device_state,
    wait_for,
)

pytestmark = pytest.mark.skipif(not hasattr(Settings, "share_group"),
                                reason="needs Settings.share_group (PostgreSQL store, #20)")

# A member of the share group in a process of its own: joins like a platform instance
# (persistent session, the same filters, status "up", will "lost"), then does nothing.
MEMBER = r"""
import json, sys, paho.mqtt.client as mqtt
host, port, cid, status, *filters = sys.argv[1:]
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, clean_session=False)
c.will_set(status, json.dumps({"state": "lost"}), qos=1, retain=True)
c.connect(host, int(port), 30)
acked = []
c.on_subscribe = lambda *a: acked.append(1)
c.subscribe([(f, 1) for f in filters])
info = c.publish(status, json.dumps({"state": "up"}), qos=1, retain=True)
while not (acked and info.is_published()):
    c.loop(0.1)
print("ready", flush=True)
c.loop_forever()
"""


def publisher(url: str) -> mqtt.Client:
    host, port, _, _ = broker_addr(url)
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-publisher")
    c.connect(host, port, 30)
    c.loop_start()
    return c


def test_a_dead_members_messages_are_taken_over(tmp_path: Path) -> None:
    (tmp_path / "mq").mkdir()
    broker = Mosquitto(tmp_path / "mq").start()
    proc = start_platform(tmp_path / "data", broker=broker.url, share_group="fota",
                          http_port=0, timeout=30)
    member = None
    try:
        host, port, _, _ = broker_addr(broker.url)
        status = "devices/_fota/instances/fota/zz-dead-member"
        filters = ["$share/fota/devices/+/ota/inform", "$share/fota/devices/+/ota/progress"]
        member = subprocess.Popen([sys.executable, "-c", MEMBER, host, str(port),
                                   "zz-dead-member", status, *filters],
                                  stdout=subprocess.PIPE, text=True)
        assert member.stdout is not None and member.stdout.readline().strip() == "ready"
        # The member hangs (it reads nothing more): the broker keeps handing it its share.
        member.send_signal(signal.SIGSTOP)
        pub = publisher(broker.url)
        devices = [f"dev-{i:03d}" for i in range(40)]
        for d in devices:
            msg = {"taskId": -1, "params": {"version": "1.0.0", "module": "MCU"}}
            pub.publish(f"devices/{d}/ota/inform", json.dumps(msg), qos=1).wait_for_publish(10)
        api = proc.client()
        # about half went to the hung member: the platform has not seen those
        seen = wait_for(lambda: len(api.list_devices()) >= 10 and api.list_devices(), 20,
                        what="the platform's share")
        assert len(seen) < len(devices)
        member.kill()  # its will says "lost": the platform takes its session over
        member.wait(10)
        wait_for(lambda: {d["id"] for d in api.list_devices()} == set(devices), 60,
                 what="every device's inform, the dead member's too")
        log = tmp_path / "data" / "platform.log"
        wait_for(lambda: "session of zz-dead-member taken over" in log.read_text(), 30,
                 what="the takeover's end")
        # the dead member's status is cleared: nobody takes it over again
        retained = []
        pub.on_message = lambda c, u, m: retained.append(m.payload)
        pub.subscribe(status, qos=1)
        time.sleep(1.0)
        assert retained == []
        pub.disconnect()
        pub.loop_stop()
    finally:
        if member is not None and member.poll() is None:
            member.kill()
        proc.stop()
        broker.stop()


def broker_up(proc) -> float:
    """fota_broker_connected of the instance (its /metrics)."""
    token = (proc.data_dir / "metrics.token").read_text().strip()
    status, body, _ = http_get(proc.api + "/metrics", {"Authorization": f"Bearer {token}"})
    assert status == 200
    line = next(x for x in body.decode().splitlines() if x.startswith("fota_broker_connected{"))
    return float(line.rsplit(" ", 1)[1])


@pytest.mark.parametrize("share_group", ["", "fota"])
def test_notices_wait_for_the_broker(tmp_path: Path, firmware: Path, share_group: str) -> None:
    """The platform's link is cut (the devices' is not): the notice of a task started
    meanwhile waits, and goes out once the platform is connected again."""
    (tmp_path / "mq").mkdir()
    broker = Mosquitto(tmp_path / "mq").start()
    path = FaultProxy(broker.port)
    proc = start_platform(tmp_path / "data", broker=f"mqtt://127.0.0.1:{path.port}",
                          share_group=share_group, http_port=0, timeout=30)
    dev = None
    try:
        api = proc.client()
        pkg = api.create_package(file=str(firmware), version="2.0.0", product="demo")
        task = api.create_task(package=pkg["id"], name="to 2.0.0")
        api.add_devices(task["id"], ["dev-r"])
        dev = FakeDevice("dev-r", broker.url).start()
        wait_for(lambda: api.list_devices(), 20, what="the device's inform")
        dev.inform_on_connect = False
        path.refuse(600)  # cut, and no new connection until told
        wait_for(lambda: broker_up(proc) == 0, 30, what="the platform's link down")
        api.start_task(task["id"])
        wait_for(lambda: device_row(api, task["id"], "dev-r")["desc"] == NOT_SENT, 30,
                 what="the notice held")
        assert dev.no_notice(0.5)
        path.refuse(0)  # the platform may connect again
        notice = dev.wait_notice(timeout=60)
        assert notice["payload"]["version"] == "2.0.0"
        dev.upgrade(notice)
        wait_device_state(api, task["id"], "dev-r", "succeeded", timeout=60)
    finally:
        if dev is not None:
            dev.stop()
        proc.stop()
        path.close()
        broker.stop()


def test_a_broker_restart_is_caught_up(tmp_path: Path, firmware: Path) -> None:
    """mosquitto restarted (without persistence: every session and subscription gone)
    mid-task: the platform subscribes again and the devices that come back get their
    notices (a device informs on connect)."""
    (tmp_path / "mq").mkdir()
    broker = Mosquitto(tmp_path / "mq").start()
    proc = start_platform(tmp_path / "data", broker=broker.url, share_group="fota",
                          http_port=0, timeout=30)
    devs: list[FakeDevice] = []
    try:
        api = proc.client()
        pkg = api.create_package(file=str(firmware), version="2.0.0", product="demo")
        task = api.create_task(package=pkg["id"], name="to 2.0.0")
        api.add_devices(task["id"], ["dev-1", "dev-2"])
        devs = [FakeDevice(d, broker.url).start() for d in ("dev-1", "dev-2")]
        api.start_task(task["id"])
        devs[0].upgrade(devs[0].wait_notice(timeout=60))
        wait_device_state(api, task["id"], "dev-1", "succeeded", timeout=60)
        broker.restart(down_seconds=1.0)
        wait_for(lambda: not devs[1].connected.is_set() or broker_up(proc) == 0, 30,
                 what="the restart seen")
        wait_for(devs[1].connected.is_set, 60, what="dev-2 back")
        # Device and platform reconnect in either order (the broker kept no sessions).
        # Device first: its reports go nowhere until the platform subscribed again, so the
        # upgrade starts only once the platform is back too.
        wait_for(lambda: broker_up(proc) == 1, 30, what="the platform connected")
        notice = devs[1].wait_notice(timeout=60)  # sent before the restart, or again after
        while (later := devs[1].next_notice(2.0)) is not None:
            notice = later
        devs[1].upgrade(notice)
        wait_device_state(api, task["id"], "dev-2", "succeeded", timeout=60)
    finally:
        for d in devs:
            d.stop()
        proc.stop()
        broker.stop()


def test_share_group_needs_an_external_broker(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="external broker"):
        start_platform(tmp_path / "data", share_group="fota", http_port=0, mqtt_port=0,
                       timeout=30)
