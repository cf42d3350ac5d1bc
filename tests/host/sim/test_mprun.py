"""Starting the unix port: the fast start behaves as the wheel's `micropython` command."""

from __future__ import annotations

import subprocess

from fota_host import paths
from fota_host.sim import mprun

PROBE = "import sys, gc; print(sys.argv[1:], gc.mem_free() + gc.mem_alloc()); sys.exit(3)"


def test_fast_start_matches_the_wheel_command() -> None:
    fast = mprun.run(["-X", "heapsize=40K", "-c", PROBE, "a", "b c"], build=False)
    plain = subprocess.run([paths.micropython_bin(), "-X", "heapsize=40K", "-c", PROBE, "a",
                            "b c"], capture_output=True, text=True, timeout=60)
    assert fast.returncode == plain.returncode == 3     # the simulated hard reset's status
    assert fast.stdout == plain.stdout                  # same argv, same heap size
    assert "['a', 'b c']" in fast.stdout


def test_micropython_override_is_used_as_given(monkeypatch) -> None:
    monkeypatch.setenv("MICROPYTHON", "/opt/mp/micropython")
    assert mprun.command(["-c", "pass"], heap="64K") == [
        "/opt/mp/micropython", "-X", "heapsize=64K", "-c", "pass"]
