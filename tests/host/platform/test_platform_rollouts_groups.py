"""A task whose devices come only from `--group` (issue #16, docs/platform.md's rollout
example): through the running service's API with the `fota` commands. Members the
platform never heard from join at the start too; an empty group is a clear 409."""

from __future__ import annotations

from pathlib import Path

from platform_fakes import Env, fota


def test_group_only_task_starts_with_members_never_heard_from(embedded: Env, firmware: Path
                                                              ) -> None:
    embedded.start()
    d = str(embedded.data)
    fota("device", "tag", "--data", d, "meter-02", "meter-01", "--add", "plant-7")
    pkg = fota("package", "create", "--data", d, "--file", str(firmware), "--version", "2.0.0")
    task = fota("task", "create", "--data", d, "--package", pkg["id"], "--name", "p7",
                "--group", "plant-7", "--wave", "1", "--wave", "rest",
                "--from-version", "1.0.0")
    started = fota("task", "start", "--data", d, str(task["id"]))
    assert started["state"] == "running"
    shown = fota("task", "show", "--data", d, str(task["id"]), "--json")
    assert [(s["device"], s["state"]) for s in shown["devices"]] == [
        ("meter-01", "pending"), ("meter-02", "pending")]

    empty = fota("task", "create", "--data", d, "--package", pkg["id"], "--name", "none",
                 "--group", "plant-9")
    refused = fota("task", "start", "--data", d, str(empty["id"]), ok=False)
    assert refused.returncode == 2
    assert "group plant-9 has no devices" in refused.stderr
    assert "fota device tag DEVICE... --add plant-9" in refused.stderr
    assert fota("task", "show", "--data", d, str(empty["id"]), "--json")["state"] == \
        "not_started"
