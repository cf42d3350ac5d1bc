"""Issue #16 on the device (the real unix port): an application's `may_reboot()` holds
the reboot into a new image (step 100 is reported first) until it says yes, or until
`reboot_defer_max_s`; and a random start delay before the download."""

from __future__ import annotations

import time
from pathlib import Path

from fota_host.images import synthetic as images
from peer import payload_for

# An application whose motor may only stop when the file `motor_stopped` exists.
APP = """VERSION = '1.0.0'
def healthy():
    return True
def may_reboot():
    import os
    try:
        os.stat('motor_stopped')
        return True
    except OSError:
        return False
def main():
    pass
"""


def _with_app(peer, dev) -> None:
    (dev.flash / "slots" / "a" / "app.py").write_text(APP)  # the running slot's app
    peer.wait_for("inform", dev.device_id, lambda m: True, 30)
    dev.kill()  # boots again, now with this application
    peer.wait(lambda: len(peer.of("inform", dev.device_id)) >= 2, timeout=30)


def _log(dev) -> str:
    return Path(dev.logfile.name).read_text()


def test_the_app_holds_the_reboot_until_it_allows_it(peer, devices, served) -> None:
    dev = devices("d1", "pico_w", reboot_defer_max_s=300)
    _with_app(peer, dev)
    boots = dev.boots
    img = served.add("v2.bin", images.sim_image("pico_w", "2.0.0", None))
    peer.notice("d1", 61, payload_for(img, "2.0.0", served.server.notice_url("v2.bin")))
    peer.wait_for("progress", "d1", lambda m: m["params"]["step"] == 100, timeout=60)
    # The device says it waits right after its step-100 report: waited for, not slept for
    # (3 s after the report could be before the line on a loaded machine).
    waits = "waits for the application's permission"
    deadline = time.monotonic() + 60
    while waits not in _log(dev) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert waits in _log(dev)
    time.sleep(3)  # the application has not allowed it: still the old image
    assert dev.boots == boots and dev.status()["version"] == "1.0.0"
    (dev.flash / "motor_stopped").write_text("")
    done = peer.wait_for("inform", "d1", lambda m: m["taskId"] == 61, timeout=60)
    assert done["params"]["version"] == "2.0.0"


def test_the_reboot_happens_at_reboot_defer_max_s(peer, devices, served) -> None:
    dev = devices("d2", "pico_w", reboot_defer_max_s=2)
    _with_app(peer, dev)
    img = served.add("v2.bin", images.sim_image("pico_w", "2.0.0", None))
    peer.notice("d2", 62, payload_for(img, "2.0.0", served.server.notice_url("v2.bin")))
    done = peer.wait_for("inform", "d2", lambda m: m["taskId"] == 62, timeout=60)
    assert done["params"]["version"] == "2.0.0"
    assert "(reboot_defer_max_s reached)" in _log(dev)


def test_a_start_delay_still_updates_and_keeps_the_link(peer, devices, served) -> None:
    devices("d3", "pico_w", download={"start_delay_s": 2})
    peer.wait_for("inform", "d3", lambda m: True, 30)
    img = served.add("v2.bin", images.sim_image("pico_w", "2.0.0", None))
    peer.notice("d3", 63, payload_for(img, "2.0.0", served.server.notice_url("v2.bin")))
    done = peer.wait_for("inform", "d3", lambda m: m["taskId"] == 63, timeout=60)
    assert done["params"]["version"] == "2.0.0"
