"""Rollouts through the running service: the `fota` commands (its admin API) and fake
devices on the embedded broker. The canary rolls back, the task pauses with its reason,
the operator stops it; nobody outside the canary had a notice."""

from __future__ import annotations

from pathlib import Path

from platform_fakes import Env, FakeDevice, fota, wait_for


def test_canary_rollback_pauses_then_stop_through_the_cli(embedded: Env, firmware: Path,
                                                          tmp_path: Path) -> None:
    embedded.start()
    d = str(embedded.data)
    devices = {n: FakeDevice(n, embedded.broker).start() for n in ("c1", "w1", "w2", "w3")}
    try:
        wait_for(lambda: len(fota("device", "list", "--data", d, "--json")) == 4, 20,
                 what="four devices seen")
        tagged = fota("device", "tag", "--data", d, *devices, "--add", "plant-7")
        assert all(r["ok"] and r["tags"] == ["plant-7"] for r in tagged)
        pkg = fota("package", "create", "--data", d, "--file", str(firmware),
                   "--version", "2.0.0")
        task = fota("task", "create", "--data", d, "--package", pkg["id"], "--name", "canary",
                    "--group", "plant-7", "--wave", "1", "--wave", "50%", "--wave", "rest",
                    "--from-version", "1.0.0", "--window", "daily 00:00-24:00")
        assert task["rollout"]["waves"] == ["1", "50%", "rest"]
        tid = str(task["id"])
        fota("task", "start", "--data", d, tid)
        canary = devices["c1"]  # the devices joined in id order: c1 is wave 1
        notice = canary.wait_notice(20)
        for step in (10, 50, 100):  # downloads and installs; after the reboot the health
            canary.progress(notice["taskId"], step)  # check fails: back on 1.0.0
        canary.inform(notice["taskId"], "1.0.0")
        shown = wait_for(lambda: (t := fota("task", "show", "--data", d, tid, "--json"))[
            "state"] == "paused" and t, 20, what="task paused")
        assert "wave 1" in shown["reason"]
        assert [w["state"] for w in shown["waves"]] == ["failed", "pending", "pending"]
        table = fota("task", "show", "--data", d, tid)
        assert "paused" in table and "wave 1" in table
        stopped = fota("task", "stop", "--data", d, tid)
        assert stopped["state"] == "stopped" and "wave 1" in stopped["reason"]
        stats = fota("task", "stats", "--data", d, tid, "--json")
        assert stats["counts"] == {"cancelled": 3, "failed": 1}
        assert stats["failures"][0]["devices"] == 1
        for name in ("w1", "w2", "w3"):
            assert devices[name].no_notice(1.0), f"{name} was notified"
        versions = fota("device", "versions", "--data", d, "--json")
        assert versions["versions"] == [{"version": "1.0.0", "devices": 4, "share": 1.0}]
        again = fota("task", "resume", "--data", d, tid, ok=False)
        assert again.returncode == 2 and "not paused" in again.stderr
    finally:
        for dev in devices.values():
            dev.stop()
