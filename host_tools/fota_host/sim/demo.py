"""`make demo`: the whole upgrade loop on one machine, no root, no system broker.

The platform with its embedded broker, synthetic images 1.0.1 and 2.0.0 per board kind,
a mixed fleet of simulated ESP32 and Pico W boards running 1.0.1, then what a user does
with the `fota` commands: package create, task create, task add-devices, task start (one
package and task per board kind). Live progress per device, a summary table, a clean
shutdown, and as the very last line one JSON object:
    {"devices": N, "succeeded": N, "failed": 0, "seconds": T}
Exit status 1 if any device did not end on 2.0.0 with its sub-task succeeded.

    python -m fota_host.sim.demo [--devices 6] [--size 262144] [--timeout 60] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from ..platform.process import start_platform
from .fleet import Fleet

OLD, NEW = "1.0.1", "2.0.0"
BOARDS = ("esp32", "pico_w")
PICO_MAX = 320 * 1024   # a Pico W slot holds 384 KiB
DEVICE_CONFIG = {"health_deadline_s": 15, "progress_step": 5, "progress_interval_s": 0.5,
                 "broker": {"keepalive": 10, "timeout_s": 3}}
TERMINAL = ("succeeded", "failed", "cancelled", "timed_out")


def fota(console: Console, *args: str) -> Any:
    """Run one `fota` command as a user would, echo it, return its JSON output."""
    cmd = [sys.executable, "-m", "fota_host", *args]
    shown = " ".join(a if " " not in a else repr(a) for a in args)
    console.print(f"[dim]$ fota {shown}[/dim]")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"fota {shown} failed ({proc.returncode}): {proc.stderr.strip()}")
    out = proc.stdout.strip()
    return json.loads(out) if out.startswith(("{", "[")) else out


def run(devices: int, size: int, timeout: float, work: Path, console: Console) -> dict[str, Any]:
    data, images = work / "platform", work / "images"
    images.mkdir(parents=True, exist_ok=True)
    console.rule("[bold]MicroPython FOTA over MQTT: demo")
    console.print("Starting the platform (embedded MQTT broker, free ports) ...")
    platform = start_platform(data, push_rate=6000, device_timeout=60)
    fleet = None
    try:
        console.print(f"  API {platform.api}  broker {platform.broker}")
        console.print("Building synthetic images with `fota pack sim-image` ...")
        files: dict[tuple[str, str], Path] = {}
        for board in BOARDS:
            for version in (OLD, NEW):
                out = images / f"{board}-{version}.bin"
                n = size if board == "esp32" else min(size, PICO_MAX)
                fota(console, "pack", "sim-image", "--board", board, "--version", version,
                     "--size", str(n), "-o", str(out))
                files[board, version] = out
        console.print(f"Starting {devices} simulated devices on {OLD} "
                      "(MicroPython unix port, ESP32 and Pico W mixed) ...")
        fleet = Fleet(work / "fleet", devices, platform.broker, BOARDS, OLD,
                      prefix_id="demo-", config=DEVICE_CONFIG).create()
        fleet.start()
        client = platform.client()
        # devices are known to the platform once they have informed their version
        seen_deadline = time.monotonic() + 30
        while time.monotonic() < seen_deadline:
            seen = {d["id"] for d in client.list_devices()}
            if set(fleet.ids) <= seen:
                break
            time.sleep(0.2)
        by_board = {b: [i for i, d in zip(fleet.ids, fleet.devices, strict=True) if d.board == b]
                    for b in BOARDS}
        t0 = time.monotonic()
        deadline = t0 + timeout  # the time allowed counts from the first package made
        tasks: dict[str, int] = {}
        for board in BOARDS:
            if not by_board[board]:
                continue
            pkg = fota(console, "package", "create", "--data", str(data), "--file",
                       str(files[board, NEW]), "--version", NEW, "--name", f"demo-{board}",
                       "--sign", "sha256")
            task = fota(console, "task", "create", "--data", str(data), "--package", pkg["id"],
                        "--name", f"{board} to {NEW}")
            fota(console, "task", "add-devices", "--data", str(data), str(task["id"]),
                 *by_board[board])
            tasks[board] = task["id"]
        for tid in tasks.values():
            fota(console, "task", "start", "--data", str(data), str(tid))
        rows = watch(client, tasks, fleet, deadline, console)
        seconds = round(time.monotonic() - t0, 1)
        # The platform's word and the device's flash must agree. A device confirms its new
        # image once the platform acknowledged its inform, so the flash may lag a moment.
        fleet.wait_versions(NEW, 10, [r["device"] for r in rows if r["state"] == "succeeded"])
        states = fleet.statuses()
        for row in rows:
            st = states.get(row["device"], {})
            row["version"] = st.get("version")
            row["board"] = st.get("board", "?")
            row["confirmed"] = not st.get("pending", True)
            row["ok"] = (row["state"] == "succeeded" and row["version"] == NEW
                         and row["confirmed"])
        summary(rows, console, seconds)
    finally:
        console.print("Shutting down the devices and the platform ...")
        if fleet is not None:
            fleet.stop()
        platform.stop()
    ok = sum(r["ok"] for r in rows)
    return {"devices": devices, "succeeded": ok, "failed": devices - ok, "seconds": seconds}


def watch(client: Any, tasks: dict[str, int], fleet: Fleet, deadline: float,
          console: Console) -> list[dict[str, Any]]:
    """Live bars from the platform's per-device step until every sub-task is final or
    time.monotonic() passes the deadline."""
    boards = {d: dev.board for d, dev in zip(fleet.ids, fleet.devices, strict=True)}
    with Progress(TextColumn("{task.fields[device]:<10}"), TextColumn("{task.fields[board]:<7}"),
                  BarColumn(bar_width=30), TextColumn("{task.percentage:>3.0f}%"),
                  TextColumn("{task.fields[state]:<10}"), TextColumn("[dim]{task.fields[desc]}"),
                  console=console, transient=False) as bars:
        ids = {d: bars.add_task("", total=100, device=d, board=boards[d], state="pending",
                                desc="") for d in fleet.ids}
        while True:
            rows = [dict(r, task=tid) for tid in tasks.values()
                    for r in client.get_task(tid)["devices"]]
            for r in rows:
                step = r["step"] or 0
                done = 100 if r["state"] == "succeeded" else max(0, step)
                colour = {"succeeded": "green", "failed": "red"}.get(r["state"], "yellow")
                bars.update(ids[r["device"]], completed=done,
                            state=f"[{colour}]{r['state']}[/{colour}]",
                            desc=(r["desc"] or "")[:40])
            if all(r["state"] in TERMINAL for r in rows) or time.monotonic() > deadline:
                return rows
            time.sleep(0.2)


def summary(rows: list[dict[str, Any]], console: Console, seconds: float) -> None:
    table = Table(title=f"Upgrade to {NEW}: {sum(r['ok'] for r in rows)}/{len(rows)} devices "
                        f"in {seconds}s")
    for col in ("device", "board", "task", "platform", "step", "running", "confirmed"):
        table.add_column(col, no_wrap=True)
    table.add_column("desc", overflow="fold")
    for r in sorted(rows, key=lambda r: r["device"]):
        colour = "green" if r["ok"] else "red"
        table.add_row(r["device"], r["board"], str(r["task"]), f"[{colour}]{r['state']}[/{colour}]",
                      str(r["step"]), str(r["version"]), "yes" if r["confirmed"] else "no",
                      r["desc"] or "")
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fota_host.sim.demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=6, help="at least 2 (default 6)")
    ap.add_argument("--size", type=int, default=1024 * 1024,
                    help="image size in bytes (Pico W: at most 320 KiB)")
    ap.add_argument("--timeout", type=float, default=60.0,
                    help="seconds for the upgrade, counted from creating the first package")
    ap.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = ap.parse_args(argv)
    if args.devices < 2:
        ap.error("--devices must be at least 2 (both board kinds)")
    console = Console(stderr=False)
    work = args.keep or Path(tempfile.mkdtemp(prefix="fota-demo-"))
    try:
        result = run(args.devices, args.size, args.timeout, work, console)
    except Exception as exc:  # noqa: BLE001 - say what broke, still end with the JSON line
        console.print(f"[red]demo failed: {exc}[/red]")
        result = {"devices": args.devices, "succeeded": 0, "failed": args.devices,
                  "seconds": None, "error": str(exc)}
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    sys.stdout.flush()
    print(json.dumps(result), flush=True)
    return 0 if result["failed"] == 0 and result["succeeded"] == result["devices"] else 1


if __name__ == "__main__":
    sys.exit(main())
