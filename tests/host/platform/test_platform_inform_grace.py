"""A connect-time inform (taskId -1) handled just after the device's notice went out is
older than the notice (informs waiting in a backlog): no second notice. One well after
the grace (the retry backoff) is a real reboot: the notice goes out again."""

from __future__ import annotations

import time
from pathlib import Path

from platform_fakes import Env, FakeDevice, device_row, make_task, wait_for

GRACE = 6.0  # the retry backoff, which is the grace


def test_inform_older_than_the_notice_gets_no_second_notice(tmp_path: Path,
                                                              firmware: Path) -> None:
    env = Env("mosquitto", tmp_path)
    try:
        env.start(device_timeout=30, retry_backoff=GRACE)
        api = env.api
        _, task = make_task(api, firmware, ["slow-1"], "grace")
        dev = FakeDevice("slow-1", env.broker, inform_on_connect=False).start()
        try:
            api.start_task(task["id"])
            notice = dev.wait_notice()
            sent = time.monotonic()
            dev.inform(-1)  # published before the notice arrived, handled after it
            log = env.proc.log_path
            wait_for(lambda: "older than the notice" in log.read_text(), timeout=20,
                     what="the inform handled")
            assert dev.no_notice(1.0), "a duplicate notice"
            assert device_row(api, task["id"], "slow-1")["state"] == "pending"
            # A real reboot, well after the grace: the notice again, same sub-task.
            time.sleep(max(0.0, GRACE + 0.5 - (time.monotonic() - sent)))
            again = wait_for(lambda: dev.inform(-1) or dev.next_notice(1.0), timeout=30,
                             interval=0, what="the notice again")
            assert again["taskId"] == notice["taskId"]
            assert again["payload"]["token"] == notice["payload"]["token"]
        finally:
            dev.stop()
    finally:
        env.stop()
