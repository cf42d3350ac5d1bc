"""The agent benches' shared trial and search: one simulated ESP32 upgraded through a
notice (bench_agent.py, bench_agent_idle.py), and the smallest heap in which it works.

Fragmentation makes the pass/fail boundary ragged (a size can fail just above one that
passes), so the figure is the smallest size from which the next `window` sizes pass as
well, and which passes twice more (fragmentation differs run to run).
"""

from __future__ import annotations

import json
import shutil
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from fota_host.sim.device import SimDevice


def smallest_heap(holds: Callable[[int], bool], low: int, high: int, window: int = 5,
                  label: str = "agent heap") -> int | None:
    """Binary search of the smallest heap (KiB) for which holds(kib) is true (`high` must
    pass, else None), then the window rule above."""
    if not holds(high):
        return None
    while high - low > 1:
        mid = (low + high) // 2
        ok = holds(mid)
        print(f"  {label} {mid}K: {'ok' if ok else 'fails'}", file=sys.stderr)
        low, high = (low, mid) if ok else (mid, high)
    while True:
        bad = next((h for h in range(high + 1, high + window) if not holds(h)), None)
        if bad is None and all(holds(high) for _ in range(2)):
            return high
        high = (bad or high) + 1
        print(f"  {label}: fails at {bad or high - 1}K, trying from {high}K", file=sys.stderr)


def upgrade_ok(root: Path, port: int, broker_url: str, notice_url: str, info: dict,
               heap: str, config: dict | None = None, files: dict[str, Path] | None = None,
               flash_setup: Callable[[Path], None] | None = None, timeout: float = 60,
               confirm_s: float = 10, dev_id: str | None = None) -> bool:
    """One device on `broker_url`, one notice for `notice_url`: True once it informs the
    new version with the task id and confirms it (through reboot and health check).
    The bench's peer publishes and listens on the plain listener at `port`."""
    import paho.mqtt.client as paho

    seen = threading.Event()
    dev_id = dev_id or f"h{heap.lower()}"

    def on_message(_c, _u, m):
        msg = json.loads(m.payload)
        if msg.get("taskId") == 9 and msg["params"].get("version") == "2.0.0":
            seen.set()

    peer = paho.Client(paho.CallbackAPIVersion.VERSION2)
    peer.on_message = on_message
    peer.on_connect = lambda c, *_: c.subscribe(f"devices/{dev_id}/ota/inform", 1)
    peer.connect("127.0.0.1", port)
    peer.loop_start()
    shutil.rmtree(root / dev_id, ignore_errors=True)
    dev = SimDevice(root / dev_id, "esp32", dev_id, broker_url, version="1.0.0", heap=heap,
                    config={"health_deadline_s": confirm_s, **(config or {})},
                    log=open(root / f"{dev_id}.log", "w"))  # noqa: SIM115
    for name, src in (files or {}).items():
        shutil.copy(src, dev.flash / name)
    if flash_setup:
        flash_setup(dev.flash)
    dev.start()
    try:
        time.sleep(1.0)
        notice = {"taskId": 9, "payload": {
            "size": info["size"], "version": "2.0.0", "url": notice_url,
            "md5": info["md5"], "token": "t", "module": "MCU"}}
        deadline = time.monotonic() + timeout
        # More than 3 boots: crashing (out of memory) rather than upgrading.
        while not seen.is_set() and time.monotonic() < deadline and dev.boots <= 3:
            if dev.boots == 1:          # (re)send until the download starts: it may be offline
                peer.publish(f"devices/{dev_id}/ota/upgrade", json.dumps(notice), qos=1)
            seen.wait(2)
        if not seen.is_set():
            return False
        try:
            dev.wait_for(lambda s: not s["pending"] and s["version"] == "2.0.0",
                         timeout=confirm_s)
            return True
        except TimeoutError:
            return False
    finally:
        dev.stop()
        peer.loop_stop()
        peer.disconnect()
