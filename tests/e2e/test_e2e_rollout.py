"""A staged rollout end to end (issue #16): simulated boards on the MicroPython unix port,
the platform with its embedded broker, the operator's `fota` commands. The canary's new
image fails its health check and rolls back; the task pauses before the second wave gets
a notice; the operator stops it; no device outside the canary was ever notified."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from e2e_world import NEW, OLD, World, boots

FOTA = [sys.executable, "-m", "fota_host"]
DEVICES = ["r1", "r2", "r3", "r4", "r5"]


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path, "embedded")
    yield w
    w.close()


def fota(*args: str) -> dict:
    proc = subprocess.run([*FOTA, *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_failing_canary_pauses_the_rollout_and_the_operator_stops_it(world: World) -> None:
    world.start()
    for dev in DEVICES:  # one trial boot: the failed health check rolls back at once
        world.device(dev, "pico_w", max_trials=1, health_deadline_s=6)
    world.online(*DEVICES, timeout=60)
    data = str(world.tmp / "platform")
    pkg = world.package("pico_w", fail_health=True)
    task = fota("task", "create", "--data", data, "--package", pkg["id"], "--name", "staged",
                "--wave", "1", "--wave", "50%", "--wave", "rest", "--max-failures", "1")
    tid = task["id"]
    assert all(r["ok"] for r in world.api.add_devices(tid, DEVICES))
    fota("task", "start", "--data", data, str(tid))

    deadline = time.monotonic() + 150
    while (shown := fota("task", "show", "--data", data, str(tid), "--json"))["state"] \
            != "paused":
        assert shown["state"] == "running", shown
        assert time.monotonic() < deadline, (shown, world.log("r1")[-3000:])
        time.sleep(0.5)
    assert shown["reason"].startswith("failure threshold: 1 of 1")
    assert [(w["size"], w["state"]) for w in shown["waves"]] == [
        (1, "failed"), (3, "pending"), (1, "pending")]  # 50 % of 5, rounded up
    canary = world.sub(tid, "r1")
    assert canary["state"] == "failed" and "rolled back" in canary["desc"]

    stopped = fota("task", "stop", "--data", data, str(tid))
    assert stopped["state"] == "stopped"
    assert "failure threshold" in stopped["reason"]
    time.sleep(2)  # a few platform ticks: nothing more goes out after a stop
    final = world.api.get_task(tid)
    for row in final["devices"][1:]:
        assert (row["state"], row["pushes"], row["notified"]) == ("cancelled", 0, None), row
        assert "offered" not in world.log(row["device"])  # the device never had a notice
    st = world.devices["r1"].status()  # the canary tried the image on trial, then rolled back
    assert st["version"] == OLD and not st["pending"], st
    assert [(v, trial) for _, v, trial in boots(world, "r1")] == [
        (OLD, False), (NEW, True), (OLD, False)]
    for dev in DEVICES[1:]:
        assert world.devices[dev].status()["version"] == OLD
    stats = fota("task", "stats", "--data", data, str(tid), "--json")
    assert stats["counts"] == {"cancelled": 4, "failed": 1}
    assert "rolled back" in stats["failures"][0]["reason"]
