"""A full disk under the platform (#12.4), on a real 8 MiB tmpfs with mosquitto: a success
report that can't be stored is neither acknowledged nor dropped, the log and the API say
"disk full", and the report lands once there is room again (in the same process, or from
the broker after a kill -9)."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fota_host.platform.validate import PlatformError
from platform_fakes import Env, FakeDevice, device_row, make_task, wait_device_state, wait_for


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)],
            capture_output=True).returncode != 0:
        pytest.skip("needs root to mount a small tmpfs")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    """Take every free byte of `disk`."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        for size in (1 << 16, 4096, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    return filler


def test_disk_full_never_acknowledges_what_was_not_stored(small_disk: Path, tmp_path: Path,
                                                          firmware: Path) -> None:
    env = Env("mosquitto", tmp_path)
    env.data = small_disk / "data"
    log_path = tmp_path / "platform.log"  # the log on a disk with room: it must tell
    try:
        proc = env.start(log_path=log_path, device_timeout=600)
        api = env.api
        pkg, task = make_task(api, firmware, ["full-1", "full-2"], "full")
        devs = [FakeDevice(d, env.broker).start() for d in ("full-1", "full-2")]
        api.start_task(task["id"])
        notices = [d.wait_notice() for d in devs]
        for dev, notice in zip(devs, notices, strict=True):
            dev.progress(notice["taskId"], 50, "downloading")
            wait_device_state(api, task["id"], dev.id, "upgrading")

        filler = fill(small_disk)
        # 1) in the same process: held while full, stored once there is room
        devs[0].inform(notices[0]["taskId"], "2.0.0")
        wait_for(lambda: "disk full" in log_path.read_text(), what="disk full in the log")
        with pytest.raises(PlatformError, match="disk full") as err:
            api.create_task(package=pkg["id"], name="no room")
        assert err.value.status == 507
        with pytest.raises(PlatformError, match="disk full") as err:
            api.create_package(file=str(firmware), version="2.0.0")
        assert err.value.status == 507
        assert not list((env.data / "packages").glob(".upload-*"))  # nothing half-written
        assert device_row(api, task["id"], "full-1")["state"] == "upgrading"
        assert api.call("GET", "/api/stats")["held"] == 1
        filler.unlink()
        wait_device_state(api, task["id"], "full-1", "succeeded", timeout=20)

        # 2) killed while the report is held: the broker still has it (never acknowledged)
        filler = fill(small_disk)
        devs[1].inform(notices[1]["taskId"], "2.0.0")
        wait_for(lambda: api.call("GET", "/api/stats")["held"] == 1, what="the second report held")
        proc.kill()
        filler.unlink()
        proc.start()
        wait_device_state(proc.client(), task["id"], "full-2", "succeeded", timeout=30)
        assert proc.client().get_task(task["id"])["state"] == "finished"
        log = log_path.read_text()
        assert "Traceback" not in log
        # the log tells each success once, when it is stored
        assert log.count("full-1 succeeded") == 1 and log.count("full-2 succeeded") == 1
        for dev in devs:
            dev.stop()
    finally:
        env.stop()
