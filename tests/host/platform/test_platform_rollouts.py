"""Rollout rules (issue #16) at the platform level: the platform in this process, its real
store, fake devices answering its notices through `on_message` as the spec's devices do,
and a clock the test moves (maintenance windows, continuous scans)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from fota_host.platform import windows
from fota_host.platform.core import Platform
from fota_host.platform.options import Settings
from fota_host.platform.validate import PlatformError
from platform_fakes import Recorder


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Fleet:
    """Fake devices: each notice is answered at once (download, steps, reboot, inform) by
    a device running `good` images; a device given a bad image rolls back (informs its old
    version). `events` is the story: ("notice", device) and ("ended", device)."""

    def __init__(self, plat: Platform, bad: bool = False) -> None:
        self.plat = plat
        self.bad = bad
        self.versions: dict[str, str] = {}
        self.events: list[tuple[str, str]] = []
        self.auto = True
        self.held: list[tuple[str, dict]] = []
        self.seen = 0

    def send(self, device: str, kind: str, msg: dict) -> None:
        self.plat.on_message(f"devices/{device}/ota/{kind}", json.dumps(msg).encode())

    def inform(self, device: str, version: str, task_id: int = -1) -> None:
        self.versions[device] = version
        self.send(device, "inform", {"taskId": task_id,
                                     "params": {"version": version, "module": "MCU"}})

    def answer(self, device: str, notice: dict, ok: bool | None = None) -> None:
        tid, new = notice["taskId"], notice["payload"]["version"]
        for step in (10, 50, 100):
            self.send(device, "progress", {"taskId": tid, "params": {"step": step,
                                                                     "desc": f"step {step}"}})
        good = (not self.bad) if ok is None else ok
        self.inform(device, new if good else self.versions.get(device, "1.0.0"), tid)
        self.events.append(("ended", device))

    def pump(self, rounds: int = 20) -> None:
        """Ticks until nothing new happens; notices answered (or held when not auto)."""
        for _ in range(rounds):
            self.plat.tick()
            sent = self.plat.rec.sent[self.seen:]
            self.seen += len(sent)
            for topic, notice in sent:
                device = topic.split("/")[1]
                self.events.append(("notice", device))
                if self.auto:
                    self.answer(device, notice)
                else:
                    self.held.append((device, notice))
            if not sent:
                self.plat.tick()
                if len(self.plat.rec.sent) == self.seen:
                    return

    def notified(self) -> list[str]:
        return [d for kind, d in self.events if kind == "notice"]


@pytest.fixture
def plat(tmp_path: Path):
    p = Platform(tmp_path / "data", Settings(push_rate=60_000, file_base="http://h/file/up"),
                 publish=Recorder())
    p.rec = p.tasks.publish
    yield p
    p.close()


def _package(plat: Platform, tmp_path: Path, version: str = "2.0.0") -> str:
    fw = tmp_path / f"fw-{version}.bin"
    fw.write_bytes(version.encode() * 5000)
    return plat.packages.add_package_file(fw, version=version, product="meter")["id"]


def _rollout(plat: Platform, tmp_path: Path, devices: list[str], version: str = "2.0.0",
             **spec) -> int:
    body = {"package": _package(plat, tmp_path, version), "name": "r", **spec}
    task = plat.rollouts.create_task(body)
    if devices:
        plat.tasks.add_devices(task["id"], devices)
    return task["id"]


def _fleet(plat: Platform, n: int, prefix: str = "d", version: str = "1.0.0",
           bad: bool = False) -> tuple[Fleet, list[str]]:
    fleet = Fleet(plat, bad)
    devices = [f"{prefix}{i:02d}" for i in range(n)]
    for d in devices:
        fleet.inform(d, version)
    return fleet, devices


def test_failing_canary_pauses_before_the_second_wave_gets_a_notice(plat, tmp_path) -> None:
    fleet, devices = _fleet(plat, 10, bad=True)
    tid = _rollout(plat, tmp_path, devices, waves=["2", "50%", "rest"])
    plat.rollouts.start_task(tid)
    fleet.pump()
    task = plat.rollouts.get_task(tid)
    assert task["state"] == "paused"
    assert "wave 1" in task["reason"] and "success threshold" in task["reason"]
    assert sorted(fleet.notified()) == devices[:2]  # the canary only
    assert [w["state"] for w in task["waves"]] == ["failed", "pending", "pending"]
    assert [w["size"] for w in task["waves"]] == [2, 5, 3]
    assert task["waves"][0]["failures"] == [
        {"reason": "device reports version 1.0.0, expected 2.0.0", "devices": 2}]
    assert task["stats"]["success_rate"] == 0.0
    stopped = plat.rollouts.stop(tid)
    fleet.pump()
    assert stopped["state"] == "stopped" and "wave 1" in stopped["reason"]
    assert sorted(fleet.notified()) == devices[:2]
    assert {d["state"] for d in stopped["devices"][2:]} == {"cancelled"}
    with pytest.raises(PlatformError, match="already stopped"):
        plat.rollouts.stop(tid)


def test_good_image_advances_through_every_wave_in_order(plat, tmp_path) -> None:
    fleet, devices = _fleet(plat, 10)
    tid = _rollout(plat, tmp_path, devices, waves=["1", "30%", "rest"])
    plat.rollouts.start_task(tid)
    fleet.pump(50)
    task = plat.rollouts.get_task(tid)
    assert task["state"] == "finished"
    assert [(w["size"], w["state"], w["succeeded"]) for w in task["waves"]] == [
        (1, "succeeded", 1), (3, "succeeded", 3), (6, "succeeded", 6)]
    waves = {d["device"]: d["wave"] for d in task["devices"]}
    # every notice of a wave comes after every device of the waves before it ended
    for i, (kind, dev) in enumerate(fleet.events):
        if kind == "notice":
            earlier = {d for d, w in waves.items() if w < waves[dev]}
            assert earlier <= {d for k, d in fleet.events[:i] if k == "ended"}
    assert task["stats"]["success_rate"] == 1.0
    assert task["stats"]["duration_median_s"] is not None
    assert task["stats"]["duration_p95_s"] >= task["stats"]["duration_median_s"]


def test_failure_threshold_counts_only_after_the_minimum_ended(plat, tmp_path) -> None:
    fleet, devices = _fleet(plat, 6)
    fleet.auto = False
    tid = _rollout(plat, tmp_path, devices, max_failures="1", min_ended=3)
    plat.rollouts.start_task(tid)
    fleet.pump()
    assert len(fleet.held) == 6
    outcomes = [False, True, True]  # one failure first, then two successes
    for (dev, notice), ok in zip(fleet.held[:2], outcomes[:2], strict=True):
        fleet.answer(dev, notice, ok)
        fleet.pump()
        assert plat.rollouts.get_task(tid)["state"] == "running"  # fewer than 3 ended
    fleet.answer(*fleet.held[2], outcomes[2])
    fleet.pump()
    task = plat.rollouts.get_task(tid)
    assert task["state"] == "paused"
    assert task["reason"].startswith("failure threshold: 1 of 3")
    # devices already upgrading finish while paused; resume counts failures afresh
    fleet.answer(*fleet.held[3], True)
    assert plat.rollouts.resume(tid)["state"] == "running"
    fleet.pump()
    assert plat.rollouts.get_task(tid)["state"] == "running"


def test_percentage_threshold_stops_the_task(plat, tmp_path) -> None:
    fleet, devices = _fleet(plat, 6, bad=True)
    tid = _rollout(plat, tmp_path, devices, waves=["2", "rest"], max_failures="50%",
                   on_failure="stop")
    plat.rollouts.start_task(tid)
    fleet.pump()
    task = plat.rollouts.get_task(tid)
    assert task["state"] == "stopped"
    assert task["reason"].startswith("failure threshold: 2 of 2")
    assert sorted(fleet.notified()) == devices[:2]
    assert [d["state"] for d in task["devices"][2:]] == ["cancelled"] * 4


def test_next_wave_waits_for_approval(plat, tmp_path) -> None:
    fleet, devices = _fleet(plat, 3)
    tid = _rollout(plat, tmp_path, devices, waves=["1", "rest"], approve_waves=True)
    plat.rollouts.start_task(tid)
    fleet.pump()
    task = plat.rollouts.get_task(tid)
    assert fleet.notified() == devices[:1]
    assert task["state"] == "running" and "approval" in task["waiting"]
    assert [w["state"] for w in task["waves"]] == ["succeeded", "awaiting_approval"]
    plat.rollouts.approve(tid)
    fleet.pump()
    assert sorted(fleet.notified()) == devices
    assert plat.rollouts.get_task(tid)["state"] == "finished"
    with pytest.raises(PlatformError, match="no wave waiting"):
        plat.rollouts.approve(tid)


def test_maintenance_window_holds_notices_until_it_opens(plat, tmp_path) -> None:
    berlin = ZoneInfo("Europe/Berlin")
    clock = Clock(datetime(2026, 12, 2, 12, 0, tzinfo=berlin).timestamp())  # a Wednesday
    plat.rollouts.clock = clock
    fleet, devices = _fleet(plat, 2)
    tid = _rollout(plat, tmp_path, devices, windows=["mon-fri 22:00-05:00 Europe/Berlin"])
    plat.rollouts.start_task(tid)
    fleet.pump()
    task = plat.rollouts.get_task(tid)
    assert fleet.notified() == []
    assert task["state"] == "running"
    assert task["waiting"].startswith("outside its maintenance windows")
    assert "2026-12-02 21:00 UTC" in task["waiting"]
    clock.t = datetime(2026, 12, 2, 23, 30, tzinfo=berlin).timestamp()
    fleet.pump()
    assert sorted(fleet.notified()) == devices
    assert plat.rollouts.get_task(tid)["state"] == "finished"


def test_window_specs() -> None:
    w = windows.parse("fri 22:00-02:00")  # UTC, crossing midnight: Friday night
    at = lambda *a: datetime(*a, tzinfo=ZoneInfo("UTC")).timestamp()  # noqa: E731
    assert w.open_at(at(2026, 12, 4, 23, 0)) and w.open_at(at(2026, 12, 5, 1, 59))
    assert not w.open_at(at(2026, 12, 5, 2, 0)) and not w.open_at(at(2026, 12, 6, 1, 0))
    assert windows.parse("sat-mon 00:00-24:00").open_at(at(2026, 12, 7, 12, 0))  # Monday
    for bad in ("mon 25:00-26:00", "funday 10:00-11:00", "mon 10:00-11:00 Mars/Base", "mon"):
        with pytest.raises(PlatformError):
            windows.parse(bad)


def test_continuous_task_takes_a_device_that_comes_online_later(plat, tmp_path) -> None:
    clock = Clock(1e9)
    plat.rollouts.clock = clock
    fleet, devices = _fleet(plat, 1)
    tid = _rollout(plat, tmp_path, devices, continuous=True, from_versions=["1.0.0"])
    plat.rollouts.start_task(tid)
    fleet.pump()
    assert plat.rollouts.get_task(tid)["state"] == "running"  # continuous: not finished
    fleet.inform("late", "1.0.0")
    fleet.inform("other", "0.9.0")  # not a version the task takes
    clock.t += 5
    fleet.pump()
    assert fleet.notified() == [devices[0], "late"]
    task = plat.rollouts.get_task(tid)
    assert {d["device"]: d["state"] for d in task["devices"]} == {
        devices[0]: "succeeded", "late": "succeeded"}
    assert plat.rollouts.stop(tid)["state"] == "stopped"


def test_version_filter_skips_other_versions(plat, tmp_path) -> None:
    fleet, _ = _fleet(plat, 0)
    fleet.inform("a", "1.0.0")
    fleet.inform("b", "0.9.0")
    tid = _rollout(plat, tmp_path, ["a", "b", "never-seen"], from_versions=["1.0.0"])
    plat.rollouts.start_task(tid)
    fleet.pump()
    rows = {d["device"]: d for d in plat.rollouts.get_task(tid)["devices"]}
    assert sorted(fleet.notified()) == ["a", "never-seen"]
    assert rows["b"]["state"] == "cancelled"
    assert rows["b"]["desc"].startswith("skipped: runs 0.9.0")


def test_groups_choose_the_devices(plat, tmp_path) -> None:
    fleet, devices = _fleet(plat, 4)
    plat.rollouts.tag(devices[:2], add="north")
    plat.rollouts.tag([devices[2]], add="south")
    assert plat.rollouts.device_tags()[devices[0]] == ["north"]
    tid = _rollout(plat, tmp_path, [], groups=["north"])
    plat.rollouts.start_task(tid)
    fleet.pump()
    assert sorted(fleet.notified()) == devices[:2]
    plat.rollouts.tag([devices[0]], remove="north")
    assert devices[0] not in plat.rollouts.device_tags()


def test_downgrade_is_refused_unless_allowed(plat, tmp_path) -> None:
    _package(plat, tmp_path, "2.0.0")
    old = _package(plat, tmp_path, "1.5.0")
    with pytest.raises(PlatformError, match="allow_downgrade") as err:
        plat.rollouts.create_task({"package": old, "name": "back"})
    assert err.value.status == 409
    task = plat.rollouts.create_task({"package": old, "name": "back", "allow_downgrade": True})
    assert task["rollout"]["allow_downgrade"] is True


def test_device_on_a_newer_version_is_skipped(plat, tmp_path) -> None:
    fleet, _ = _fleet(plat, 0)
    fleet.inform("new", "3.0.0")
    fleet.inform("old", "1.0.0")
    tid = _rollout(plat, tmp_path, ["new", "old"], waves=["100%"])
    plat.rollouts.start_task(tid)
    fleet.pump()
    assert fleet.notified() == ["old"]
    versions = plat.rollouts.fleet_versions()
    assert [v["version"] for v in versions["versions"]] == ["3.0.0", "2.0.0"]


def test_pause_holds_notices_and_resume_sends_them(plat, tmp_path) -> None:
    fleet, devices = _fleet(plat, 2)
    task = plat.tasks.create_task(package=_package(plat, tmp_path), name="plain")
    plat.tasks.add_devices(task["id"], devices)
    plat.tasks.start_task(task["id"])
    paused = plat.rollouts.pause(task["id"])
    assert paused["state"] == "paused" and paused["reason"] == "paused by the operator"
    fleet.pump()
    assert fleet.notified() == []
    assert plat.rollouts.resume(task["id"])["state"] == "running"
    fleet.pump()
    assert sorted(fleet.notified()) == devices
    assert plat.rollouts.get_task(task["id"])["state"] == "finished"
