"""Hostile input on every topic: dropped, logged once, nothing corrupted, service alive."""

from __future__ import annotations

import json
from pathlib import Path

from platform_fakes import FakeDevice, device_row, make_task, wait_device_state, wait_for


def test_hostile_messages_are_dropped(env, firmware: Path) -> None:
    env.start(device_timeout=30)
    api = env.api
    _, task = make_task(api, firmware, ["victim", "other"], "h")
    victim = FakeDevice("victim", env.broker).start()
    other = FakeDevice("other", env.broker).start()
    evil = FakeDevice("evil", env.broker, inform_on_connect=False).start()
    try:
        api.start_task(task["id"])
        notice = victim.wait_notice()
        other.wait_notice()
        sub = notice["taskId"]
        victim.progress(sub, 20, "downloading")
        wait_for(lambda: device_row(api, task["id"], "victim")["step"] == 20)
        before = api.get_task(task["id"])
        garbage = [
            b"", b"not json", b"\xff\xfe\x00", b"[1, 2]", b"null", b"{}",
            json.dumps({"taskId": "1", "params": {"version": "9"}}).encode(),
            json.dumps({"taskId": True, "params": {"step": 1}}).encode(),
            json.dumps({"taskId": 1.5, "params": {"step": 1}}).encode(),
            json.dumps({"taskId": sub, "params": []}).encode(),
            json.dumps({"taskId": sub, "params": {"step": "50"}}).encode(),
            json.dumps({"taskId": sub, "params": {"step": 10**30}}).encode(),
            json.dumps({"taskId": sub, "params": {"step": 5, "desc": {"x": 1}}}).encode(),
            json.dumps({"taskId": sub, "params": {"version": 2}}).encode(),
            json.dumps({"taskId": 10**40, "params": {"version": "2.0.0"}}).encode(),
            json.dumps({"taskId": 424242, "params": {"step": 50}}).encode(),
            b"{" * 100_000,
            # (under the brokers' 256 KiB packet cap: test_platform_security_broker.py)
            json.dumps({"taskId": sub, "params": {"step": 50, "desc": "x" * 200_000}}).encode(),
        ]
        for raw in garbage:
            victim.publish("progress", None, raw=raw)
            victim.publish("inform", None, raw=raw)
        # another device claiming the victim's sub-task: failure and success reports
        evil.progress(sub, -1, "I am not the victim")
        evil.inform(sub, "2.0.0")
        # a report on a device topic outside the task
        evil.inform(-1, "6.6.6")
        # reports about the right sub-task id on the wrong device's topic
        other.progress(sub, 99, "cross-talk")
        # the service is alive and still works: a genuine report goes through
        victim.progress(sub, 60, "still here")
        wait_for(lambda: device_row(api, task["id"], "victim")["step"] == 60)
        after = api.get_task(task["id"])
        keep = ("device", "state", "subtask")
        assert [{k: d[k] for k in keep} for d in after["devices"]] == \
               [{k: d[k] for k in keep} for d in before["devices"]]
        assert env.proc.proc.poll() is None
        stats = env.api.call("GET", "/api/stats")
        assert stats["dropped"] >= len(garbage) * 2 - 4  # empty & "{}" shapes included
        log = (env.data / "platform.log").read_text()
        assert "dropped message" in log
        assert "Traceback" not in log  # each drop is one line, not an error
        victim.upgrade(notice)
        wait_device_state(api, task["id"], "victim", "succeeded")
        assert device_row(api, task["id"], "other")["state"] == "pending"
    finally:
        for d in (victim, other, evil):
            d.stop()
