"""`make demo` as a user runs it: the last line says every device was upgraded, with signed
images, a delta for the boards on its base, and two waves."""

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
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert set(result) == {"devices", "succeeded", "failed", "seconds", "bytes_saved", "waves"}
    assert result["devices"] == 5 and result["succeeded"] == 5 and result["failed"] == 0
    # ESP32 demo-001 and demo-003 run the delta's base, demo-005 an older version
    assert result["waves"] == 2 and result["bytes_saved"] > 0
    assert 0 < result["seconds"] < 60
    assert proc.returncode == 0
    out = proc.stdout
    # what the user saw: the fota commands, the devices, the summary
    for cmd in ("fota package create", "fota task create", "fota task add-devices",
                "fota task start"):
        assert cmd in out
    assert out.count("succeeded") >= 5 and "Upgrade to 2.0.0: 5/5" in out
    for cmd in ("fota keys generate", "fota sign", "fota package add-delta", "--trust",
                "--wave 1 --wave rest", "/console"):
        assert cmd in out, cmd
    rows = [line.split() for line in out.splitlines() if line.strip().startswith("demo-")
            and "succeeded" in line and "yes" in line.split()]
    kinds = {r[0]: r[3] for r in rows}
    assert kinds == {"demo-001": "delta", "demo-002": "full", "demo-003": "delta",
                     "demo-004": "full", "demo-005": "full"}, rows
    assert f"saved {result['bytes_saved']:,} bytes" in " ".join(out.split())


def test_demo_exits_non_zero_when_the_upgrade_cannot_finish():
    # 2,000,000 bytes do not fit the ESP32's 1.5 MiB slot (the Pico W image is capped at its
    # slot size): the ESP32 refuses the image, the Pico W upgrades, the demo says so and fails.
    proc = subprocess.run([sys.executable, "-m", "fota_host.sim.demo", "--devices", "2",
                           "--size", "2000000"], capture_output=True, text=True, timeout=120)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 1
    assert result == {"devices": 2, "succeeded": 1, "failed": 1, "seconds": result["seconds"],
                      "bytes_saved": 0, "waves": 1}, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "does not fit" in " ".join(proc.stdout.split())
