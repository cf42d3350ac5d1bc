"""`make demo` as a user runs it: the last line says every device was upgraded."""

from __future__ import annotations

import json
import subprocess
import sys


def test_demo_upgrades_every_device_and_ends_with_the_json_line():
    proc = subprocess.run([sys.executable, "-m", "fota_host.demo", "--devices", "5"],
                          capture_output=True, text=True, timeout=120)
    lines = proc.stdout.strip().splitlines()
    assert lines, proc.stderr
    result = json.loads(lines[-1])
    assert set(result) == {"devices", "succeeded", "failed", "seconds"}
    assert result["devices"] == 5 and result["succeeded"] == 5 and result["failed"] == 0
    assert 0 < result["seconds"] < 60
    assert proc.returncode == 0
    out = proc.stdout
    # what the user saw: the fota commands, the devices, the summary
    for cmd in ("fota package create", "fota task create", "fota task add-devices",
                "fota task start"):
        assert cmd in out
    assert out.count("succeeded") >= 5 and "Upgrade to 2.0.0: 5/5" in out


def test_demo_exits_non_zero_when_the_upgrade_cannot_finish():
    # no time at all for the upgrade: the devices can't all succeed
    proc = subprocess.run([sys.executable, "-m", "fota_host.demo", "--devices", "2",
                           "--timeout", "0"], capture_output=True, text=True, timeout=120)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 1
    assert result["failed"] > 0 and result["succeeded"] + result["failed"] == 2
