"""A connect-time inform (taskId -1) handled just after the device's notice went out is
older than the notice (informs waiting in a backlog): no second notice at once, but one
when the grace (the retry backoff) has passed with no report, for a device that really
lost it."""

from __future__ import annotations

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
            dev.inform(-1)  # published before the notice arrived, handled after it
            log = env.proc.log_path
            wait_for(lambda: "older than the notice" in log.read_text(), timeout=20,
                     what="the inform handled")
            # the inform took the branch that holds the notice back (the log line above),
            # so nothing is sent at once; the device reports nothing, as one that really
            # lost the notice: once the grace has passed, the same notice comes again
            assert device_row(api, task["id"], "slow-1")["state"] == "pending"
            again = dev.wait_notice(timeout=GRACE + 60)
            assert again["taskId"] == notice["taskId"]
            assert again["payload"]["token"] == notice["payload"]["token"]
            assert dev.no_notice(1.0), "one notice again, not more"
        finally:
            dev.stop()
    finally:
        env.stop()
