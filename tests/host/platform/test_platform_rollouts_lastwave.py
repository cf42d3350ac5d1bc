"""A wave that ends below the success threshold pauses (or stops) its task, whichever wave
it is (docs/platform.md, Rollouts): the last one and a single one too, where the last
report used to finish the task (`finished`, reason null) before the rules could judge the
wave. The same for the failure threshold reached by a task's last report. Fake devices
answer the real platform's notices through `on_message` (test_platform_rollouts.Fleet); a
failing one reports what a device given another board's package does (step -3), or rolls
back (informs its old version)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import test_platform_rollouts
from fota_host.platform.core import Platform
from test_platform_rollouts import Fleet, _fleet, _rollout

plat = test_platform_rollouts.plat   # the same platform fixture

REFUSED = "not an app bundle (magic)"


class MixedFleet(Fleet):
    """Devices in `failing` refuse the package (progress -3, as a pico_w given an esp32
    bundle), or, with `rollback`, install it and boot back into their old version."""

    def __init__(self, plat: Platform, failing: set[str], rollback: bool = False) -> None:
        super().__init__(plat)
        self.failing = failing
        self.rollback = rollback

    def answer(self, device: str, notice: dict, ok: bool | None = None) -> None:
        if device in self.failing and not self.rollback:
            self.send(device, "progress", {"taskId": notice["taskId"],
                                           "params": {"step": -3, "desc": REFUSED}})
            self.events.append(("ended", device))
            return
        super().answer(device, notice, ok=device not in self.failing)


def _run(plat: Platform, tmp_path: Path, n: int, failing: set[int], rollback: bool = False,
         prefix: str = "d", **spec) -> tuple[int, list[str], MixedFleet]:
    _, devices = _fleet(plat, n, prefix)
    fleet = MixedFleet(plat, {devices[i] for i in failing}, rollback)
    fleet.versions = {d: "1.0.0" for d in devices}
    fleet.seen = len(plat.rec.sent)  # notices of earlier tasks are not this fleet's
    tid = _rollout(plat, tmp_path, devices, **spec)
    plat.rollouts.start_task(tid)
    fleet.pump()
    return tid, devices, fleet


def _story(caplog: pytest.LogCaptureFixture, tid: int) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "fota.platform" and re.match(rf"task {tid}\b", r.getMessage())]


def test_mixed_fleet_last_wave_below_threshold_pauses_naming_it(plat, tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO, "fota.platform")
    # alternating boards, an esp32-only package: every second device refuses it
    tid, devices, fleet = _run(plat, tmp_path, 6, {1, 3, 5}, waves=["1", "rest"])
    assert sorted(fleet.notified()) == devices  # wave 1 (d00) succeeded, wave 2 opened
    task = plat.rollouts.get_task(tid)
    reason = "wave 2: 2 of 5 device(s) succeeded (40 %), below the success threshold (95 %)"
    assert (task["state"], task["reason"]) == ("paused", reason)
    assert [w["state"] for w in task["waves"]] == ["succeeded", "failed"]
    assert task["waves"][1]["failures"] == [{"reason": REFUSED, "devices": 3}]
    story = _story(caplog, tid)
    assert [m for m in story if "paused" in m or "finished" in m] == \
        [f"task {tid} paused: {reason}"], story
    # the operator decides: resume accepts the wave, and the task is done
    assert plat.rollouts.resume(tid)["state"] == "finished"


def test_single_wave_below_threshold_pauses(plat, tmp_path) -> None:
    tid, _, _ = _run(plat, tmp_path, 4, {2}, rollback=True, waves=["rest"])
    task = plat.rollouts.get_task(tid)
    assert task["state"] == "paused"
    assert task["reason"] == ("wave 1: 3 of 4 device(s) succeeded (75 %), below the success"
                              " threshold (95 %)")
    assert [w["state"] for w in task["waves"]] == ["failed"]


def test_last_wave_where_every_device_failed_stops_with_on_failure_stop(plat, tmp_path) -> None:
    tid, devices, _ = _run(plat, tmp_path, 3, {1, 2}, waves=["1", "rest"], on_failure="stop")
    task = plat.rollouts.get_task(tid)
    assert task["state"] == "stopped"
    assert task["reason"] == ("wave 2: 0 of 2 device(s) succeeded (0 %), below the success"
                              " threshold (95 %)")
    assert [d["state"] for d in task["devices"]] == ["succeeded", "failed", "failed"]


def test_last_wave_of_one_device(plat, tmp_path) -> None:
    tid, _, _ = _run(plat, tmp_path, 3, {2}, rollback=True, waves=["2", "rest"])
    task = plat.rollouts.get_task(tid)
    assert [w["size"] for w in task["waves"]] == [2, 1]
    assert (task["state"], task["reason"]) == (
        "paused", "wave 2: 0 of 1 device(s) succeeded (0 %), below the success threshold"
        " (95 %)")
    good, _, _ = _run(plat, tmp_path, 3, set(), waves=["2", "rest"], prefix="e",
                      version="3.0.0")
    done = plat.rollouts.get_task(good)
    assert (done["state"], done["reason"]) == ("finished", None)
    assert [w["state"] for w in done["waves"]] == ["succeeded", "succeeded"]


def test_failing_wave_followed_only_by_empty_waves_pauses(plat, tmp_path) -> None:
    # 2 devices, waves 2 / 1 / rest: waves 2 and 3 get no device, so wave 1's last report
    # leaves no active sub-task in the task
    tid, _, _ = _run(plat, tmp_path, 2, {0}, waves=["2", "1", "rest"])
    task = plat.rollouts.get_task(tid)
    assert [w["size"] for w in task["waves"]] == [2, 0, 0]
    assert task["state"] == "paused"
    assert task["reason"].startswith("wave 1: 1 of 2 device(s) succeeded (50 %), below")


def test_empty_last_wave_after_good_waves_finishes(plat, tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO, "fota.platform")
    tid, _, _ = _run(plat, tmp_path, 2, set(), waves=["1", "1", "rest"])
    task = plat.rollouts.get_task(tid)
    assert [w["size"] for w in task["waves"]] == [1, 1, 0]
    assert (task["state"], task["reason"]) == ("finished", None)
    assert not [m for m in _story(caplog, tid) if "paused" in m]


def test_exactly_the_threshold_succeeds(plat, tmp_path) -> None:
    tid, _, _ = _run(plat, tmp_path, 20, {7}, waves=["rest"])  # 19 of 20: 95 %
    assert plat.rollouts.get_task(tid)["state"] == "finished"


def test_failure_threshold_reached_by_the_last_report_pauses(plat, tmp_path) -> None:
    tid, _, _ = _run(plat, tmp_path, 3, {2}, waves=["rest"], max_failures="1")
    task = plat.rollouts.get_task(tid)
    assert task["state"] == "paused"
    assert task["reason"].startswith("failure threshold: 1 of 3 ended device(s) failed")


def test_task_whose_devices_are_all_skipped_finishes(plat, tmp_path) -> None:
    # no device runs a --from-version: every wave is empty once the plan skipped them all
    tid, _, fleet = _run(plat, tmp_path, 3, set(), waves=["1", "rest"],
                         from_versions=["0.9.0"])
    task = plat.rollouts.get_task(tid)
    assert fleet.notified() == []
    assert {d["state"] for d in task["devices"]} == {"cancelled"}
    assert (task["state"], task["reason"]) == ("finished", None)


def test_continuous_task_keeps_running_whatever_its_devices_did(plat, tmp_path) -> None:
    """A continuous task runs until its end time or a stop (docs/platform.md): devices
    that failed do not pause it, so devices that join later still get the package."""
    tid, _, _ = _run(plat, tmp_path, 2, {1}, continuous=True)
    task = plat.rollouts.get_task(tid)
    assert (task["state"], task["reason"]) == ("running", None)


def test_a_plain_task_paused_and_resumed_is_judged_as_before(plat, tmp_path) -> None:
    """A task without rollout options that the operator paused and resumed finishes as a
    plain task does: resuming accepts its one wave (docs: the wave that paused the task
    counts as accepted), so it is not judged on the devices left after the pause alone
    (it was paused at "wave 1: 1 of 2" though 3 of 4 devices succeeded)."""
    _, devices = _fleet(plat, 4)
    fleet = MixedFleet(plat, {devices[3]})
    fleet.versions = {d: "1.0.0" for d in devices}
    fleet.seen, fleet.auto = len(plat.rec.sent), False
    tid = _rollout(plat, tmp_path, devices)            # no rollout options
    plat.rollouts.start_task(tid)
    fleet.pump()
    held = dict(fleet.held)
    fleet.held.clear()
    assert sorted(held) == devices
    for d in devices[:2]:
        fleet.answer(d, held[d])
    assert plat.rollouts.pause(tid)["state"] == "paused"
    assert plat.rollouts.resume(tid)["state"] == "running"
    fleet.pump()                                       # the rules look at the task again
    held.update(fleet.held)
    for d in devices[2:]:
        fleet.answer(d, held[d])
    fleet.auto = True
    fleet.pump()
    task = plat.rollouts.get_task(tid)
    assert sorted(d["state"] for d in task["devices"]) == ["failed"] + ["succeeded"] * 3
    assert (task["state"], task["reason"]) == ("finished", None)
