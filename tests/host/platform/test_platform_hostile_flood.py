"""Junk floods (#12.9): drop lines are rate-limited per device with a summary count, and
many devices at once share a bounded budget; the log stays small, nothing else is lost."""

from __future__ import annotations

import re
from pathlib import Path

from platform_fakes import FakeDevice, make_task, wait_device_state, wait_for

JUNK = 2000
SOURCES = 400


def test_a_junk_flood_leaves_a_short_log(embedded, firmware: Path) -> None:
    embedded.start()
    api = embedded.api
    _, task = make_task(api, firmware, ["good-1"], "flood")
    good = FakeDevice("good-1", embedded.broker).start()
    junk = FakeDevice("junk-1", embedded.broker, inform_on_connect=False).start()
    try:
        api.start_task(task["id"])
        notice = good.wait_notice()
        for i in range(JUNK):
            junk.client.publish("devices/junk-1/ota/progress", b"not json %d" % i, qos=1)
        for i in range(SOURCES):  # junk under many device ids at once
            junk.client.publish(f"devices/other-{i}/ota/inform", b"[]", qos=1)
        wait_for(lambda: api.call("GET", "/api/stats")["dropped"] >= JUNK + SOURCES, 180,
                 what="every junk message handled")
        good.upgrade(notice)  # a genuine device is unaffected
        wait_device_state(api, task["id"], "good-1", "succeeded")
    finally:
        good.stop()
        junk.stop()
    embedded.proc.stop()  # the summaries of the last window are written at the stop
    log = (embedded.data / "platform.log").read_text()
    from_junk = [ln for ln in log.splitlines() if "dropped message on devices/junk-1" in ln]
    assert 1 <= len(from_junk) <= 10
    held = sum(int(n) for n in re.findall(r"\.\.\. and (\d+) more from junk-1 in the last", log))
    assert held == JUNK - len(from_junk)
    assert len(log) < 150_000, f"log grew to {len(log)} bytes"
    assert "Traceback" not in log
