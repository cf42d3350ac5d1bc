"""`make demo` as a user runs it: the last line says every device was upgraded."""

from __future__ import annotations

import json
import subprocess
import sys


def test_demo_upgrades_every_device_and_ends_with_the_json_line():
    proc = subprocess.run([sys.executable, "-m", "fota_host.sim.demo", "--devices", "5"],
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
    # 2,000,000 bytes do not fit the ESP32's 1.5 MiB slot (the Pico W image is capped at its
    # slot size): the ESP32 refuses the image, the Pico W upgrades, the demo says so and fails.
    proc = subprocess.run([sys.executable, "-m", "fota_host.sim.demo", "--devices", "2",
                           "--size", "2000000"], capture_output=True, text=True, timeout=120)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 1
    assert result == {"devices": 2, "succeeded": 1, "failed": 1, "seconds": result["seconds"]}
    assert "does not fit" in " ".join(proc.stdout.split())
