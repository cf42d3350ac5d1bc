"""`make demo`: the whole upgrade loop on one machine, no root, no system broker, shown as a
tour a person can repeat by hand.

The platform with its embedded broker, synthetic images 1.0.1 and 2.0.0 per board kind,
a mixed fleet of simulated ESP32 and Pico W boards running 1.0.1, then what a user does
with the `fota` commands: package create, task create, task add-devices, task start (one
package and task per board kind). Every command is printed as it could be typed (in the
work folder, lines broken with ` \\` to fit 80 columns); live progress per device, a
summary table, a clean shutdown, and as the very last line one JSON object:
    {"devices": N, "succeeded": N, "failed": 0, "seconds": T}
Exit status 1 if any device did not end on 2.0.0 with its sub-task succeeded; 130 when
interrupted (Ctrl-C or SIGTERM: one line says what was cleaned up, no JSON line).

    python -m fota_host.sim.demo [--devices 6] [--size N] [--timeout 60] [--keep [DIR]]
                                 [--slow | --pace SECONDS]
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table
from rich.text import Text

from ..cli.output import safe
from ..platform.process import start_platform
from .faults import LinkFaults
from .fleet import Fleet, HttpProxy

OLD, NEW = "1.0.1", "2.0.0"
BOARDS = ("esp32", "pico_w")
PICO_MAX = 320 * 1024   # a Pico W slot holds 384 KiB
HEALTH_DEADLINE = 15
DEVICE_CONFIG = {"progress_interval_s": 0.5, "broker": {"keepalive": 10}}
TERMINAL = ("succeeded", "failed", "cancelled", "timed_out")
WIDTH = 78              # command lines fit an 80-column terminal
SLOW_PACE, SLOW_RATE = 2.0, 100_000     # --slow: seconds per step, bytes/s per download


class Interrupted(Exception):
    """Ctrl-C or SIGTERM: stop, clean up, say so in one line."""


def command_lines(words: list[str], width: int = WIDTH) -> list[str]:
    """`$ fota ...` broken between arguments (an option stays with its value) with ` \\`
    continuations, each line at most `width` columns unless one argument is longer."""
    quoted = [shlex.quote(w) for w in words]
    groups: list[str] = []
    i = 0
    while i < len(quoted):
        if quoted[i].startswith("-") and i + 1 < len(quoted) and \
                not quoted[i + 1].startswith("-"):
            groups.append(f"{quoted[i]} {quoted[i + 1]}")
            i += 2
        else:
            groups.append(quoted[i])
            i += 1
    lines, line = [], "$ fota"
    for group in groups:
        if len(line) + 1 + len(group) + 2 > width and line.strip() not in ("$ fota", ""):
            lines.append(line + " \\")
            line = "    " + group
        else:
            line += " " + group
    return lines + [line]


class Tour:
    """What the person sees: numbered steps, the commands, a pause between steps."""

    def __init__(self, console: Console, work: Path, pace: float) -> None:
        self.console, self.work, self.pace, self.n = console, work, pace, 0

    def step(self, text: str) -> None:
        if self.n and self.pace:
            time.sleep(self.pace)
        self.n += 1
        self.console.print()
        self.console.print(Text(f"{self.n}. {text}", style="bold"))

    def say(self, text: str) -> None:
        self.console.print(Text("   " + text), soft_wrap=False)

    def show(self, *args: str) -> None:
        for line in command_lines(list(args)):
            self.console.print(Text(line, style="cyan"), soft_wrap=True)

    def fota(self, *args: str) -> Any:
        """Run one `fota` command in the work folder as a user would, echo it, return its
        JSON output. Its own session: a Ctrl-C reaches the demo, which stops it."""
        self.show(*args)
        proc = subprocess.run([sys.executable, "-m", "fota_host", *args], cwd=self.work,
                              capture_output=True, text=True, timeout=120,
                              start_new_session=True)
        if proc.returncode != 0:
            raise RuntimeError(f"fota {shlex.join(args)} failed ({proc.returncode}): "
                               f"{proc.stderr.strip()}")
        out = proc.stdout.strip()
        if not out.startswith(("{", "[")):
            self.console.print(Text(out), soft_wrap=True)     # a table for people
            return out
        result = json.loads(out)
        if isinstance(result, dict) and "id" in result and args[1] == "create":
            self.say(f"-> id {result['id']}")
        return result


def run(devices: int, size: int, timeout: float, work: Path, console: Console,
        pace: float = 0.0, rate: float | None = None,
        cleaned: list[str] | None = None) -> dict[str, Any]:
    cleaned = cleaned if cleaned is not None else []
    tour = Tour(console, work, pace)
    images = work / "images"
    images.mkdir(parents=True, exist_ok=True)
    console.rule("[bold]MicroPython FOTA over MQTT: demo")
    tour.say(f"Every command below runs in {work}: `cd` there to repeat them by hand")
    tour.say("(with .venv/bin on your PATH: `source .venv/bin/activate`).")
    tour.step("Start the platform: packages, tasks, an embedded MQTT broker, file server.")
    proxy_port = None
    if rate:
        from ..sim.faults import FaultProxy

        probe = FaultProxy(1)       # a free port for the slow download path
        proxy_port = probe.port
        probe.close()
    platform = start_platform(work / "platform", push_rate=6000, device_timeout=60,
                              **({"public_url": f"http://127.0.0.1:{proxy_port}"}
                                 if proxy_port else {}))
    cleaned.append("the platform")
    fleet = None
    rows: list[dict[str, Any]] = []
    try:
        tour.show("platform", "serve", "--data", "platform", "--http-port", "0",
                  "--mqtt-port", "0", "--push-rate", "6000")
        tour.say("(the demo starts it from Python with these options: start_platform())")
        tour.say(f"admin API {platform.api}, broker {platform.broker}")
        tour.step(f"Build images {OLD} and {NEW} for each board kind (synthetic, valid).")
        files: dict[tuple[str, str], str] = {}
        for board in BOARDS:
            for version in (OLD, NEW):
                n = size if board == "esp32" else min(size, PICO_MAX)
                out = f"images/{board}-{version}.bin"
                tour.fota("pack", "sim-image", "--board", board, "--version", version,
                          "--size", str(n), "-o", out)
                files[board, version] = out
        tour.step(f"Start {devices} simulated boards on {OLD}: the real device code on the "
                  "MicroPython unix port.")
        config = {**DEVICE_CONFIG, "health_deadline_s": HEALTH_DEADLINE}
        tour.show("sim", "fleet", "--count", str(devices), "--broker", platform.broker,
                  "--data", "fleet", "--version", OLD, "--prefix-id", "demo-",
                  "--health-deadline", str(HEALTH_DEADLINE),
                  "--config", json.dumps(DEVICE_CONFIG, separators=(",", ":")))
        tour.say("(run in-process here: fota_host.sim.fleet.Fleet, the same code)")
        http = None
        if proxy_port:
            http = HttpProxy(proxy_port, platform.api, LinkFaults(rate=rate))
            tour.say(f"--slow: downloads go through a proxy at {rate / 1000:g} kB/s each")
        fleet = Fleet(work / "fleet", devices, platform.broker, BOARDS, OLD,
                      prefix_id="demo-", config=config, http=http).create()
        cleaned.append(f"{devices} devices")
        fleet.start()
        client = platform.client()
        # devices are known to the platform once they have informed their version
        seen_deadline = time.monotonic() + 30
        while time.monotonic() < seen_deadline:
            if set(fleet.ids) <= {d["id"] for d in client.list_devices()}:
                break
            time.sleep(0.2)
        tour.say("each board connected and informed its version:")
        tour.fota("device", "list", "--data", "platform")
        by_board = {b: [i for i, d in zip(fleet.ids, fleet.devices, strict=True) if d.board == b]
                    for b in BOARDS}
        tour.step(f"Upload {NEW} and make one upgrade task per board kind (a task has one "
                  "package).")
        t0 = time.monotonic()
        deadline = t0 + timeout  # the time allowed counts from the first package made
        tasks: dict[str, int] = {}
        for board in BOARDS:
            if not by_board[board]:
                continue
            pkg = tour.fota("package", "create", "--data", "platform", "--file",
                            files[board, NEW], "--version", NEW, "--name", f"demo-{board}",
                            "--sign", "sha256")
            task = tour.fota("task", "create", "--data", "platform", "--package", pkg["id"],
                             "--name", f"{board} to {NEW}")
            tour.fota("task", "add-devices", "--data", "platform", str(task["id"]),
                      *by_board[board])
            tasks[board] = task["id"]
        tour.step("Start the tasks: notices go out, the boards download, verify, reboot "
                  "into the new image and confirm it.")
        for tid in tasks.values():
            tour.fota("task", "start", "--data", "platform", str(tid))
        tour.say("the same live view, by hand: fota task watch --data platform TASK")
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
        tour.step("What the platform says, next to what each board's flash says:")
        summary(rows, console, seconds)
        tour.say("the platform's own view: fota task show --data platform TASK")
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
    with Progress(TextColumn("{task.fields[device]:<9}"), TextColumn("{task.fields[board]:<6}"),
                  BarColumn(bar_width=20), TextColumn("{task.percentage:>3.0f}%"),
                  TextColumn("{task.fields[state]}"), TextColumn("{task.fields[desc]}"),
                  console=console, transient=False) as bars:
        ids = {d: bars.add_task("", total=100, device=d, board=boards[d],
                                state=Text("pending   "), desc=Text("")) for d in fleet.ids}
        while True:
            rows = [dict(r, task=tid) for tid in tasks.values()
                    for r in client.get_task(tid)["devices"]]
            for r in rows:
                step = r["step"] or 0
                done = 100 if r["state"] == "succeeded" else max(0, step)
                colour = {"succeeded": "green", "failed": "red"}.get(r["state"], "yellow")
                # device text is data: Text, never markup
                bars.update(ids[r["device"]], completed=done,
                            state=Text(f"{r['state']:<10}", style=colour),
                            desc=Text(safe(r["desc"])[:24], style="dim"))
            if all(r["state"] in TERMINAL for r in rows) or time.monotonic() > deadline:
                return rows
            time.sleep(0.2)


def summary(rows: list[dict[str, Any]], console: Console, seconds: float) -> None:
    from rich import box

    table = Table(title=f"Upgrade to {NEW}: {sum(r['ok'] for r in rows)}/{len(rows)} devices "
                        f"in {seconds}s", box=box.SIMPLE_HEAD, title_justify="left",
                  pad_edge=False, collapse_padding=True)
    for col in ("device", "board", "task", "state", "step", "running", "ok"):
        table.add_column(col, no_wrap=True)
    table.add_column("desc", no_wrap=True, overflow="ellipsis", max_width=20)
    for r in sorted(rows, key=lambda r: r["device"]):
        colour = "green" if r["ok"] else "red"
        table.add_row(r["device"], r["board"], str(r["task"]), Text(r["state"], style=colour),
                      str(r["step"]), str(r["version"]), "yes" if r["confirmed"] else "no",
                      Text(safe(r["desc"])))
    console.print(table)
    for r in sorted(rows, key=lambda r: r["device"]):
        if not r["ok"]:
            console.print(Text(f"{r['device']}: {r['state']} {r['step']} {safe(r['desc'])}",
                               style="red"))


def _interrupt(signum: int, _frame: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)       # a second Ctrl-C: cleanup goes on
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Interrupted(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fota_host.sim.demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=6, help="at least 2 (default 6)")
    ap.add_argument("--size", type=int, default=1024 * 1024,
                    help="image size in bytes (Pico W: at most 320 KiB)")
    ap.add_argument("--timeout", type=float, default=60.0,
                    help="seconds for the upgrade, counted from creating the first package")
    ap.add_argument("--keep", nargs="?", const="", default=None, metavar="DIR",
                    help="keep the work folder (a new temporary one, or DIR)")
    ap.add_argument("--pace", type=float, default=0.0,
                    help="seconds to pause between the tour's steps (default 0)")
    ap.add_argument("--slow", action="store_true",
                    help=f"a pace a person can follow: --pace {SLOW_PACE:g} and downloads "
                         f"limited to {SLOW_RATE // 1000} kB/s each")
    args = ap.parse_args(argv)
    if args.devices < 2:
        ap.error("--devices must be at least 2 (both board kinds)")
    pace = args.pace or (SLOW_PACE if args.slow else 0.0)
    rate = SLOW_RATE if args.slow else None
    timeout = args.timeout if not args.slow else max(args.timeout, 300.0)
    console = Console(stderr=False)
    work = Path(args.keep).resolve() if args.keep else Path(tempfile.mkdtemp(prefix="fota-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    keep = args.keep is not None
    cleaned: list[str] = []
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    interrupted = None
    try:
        result = run(args.devices, args.size, timeout, work, console, pace, rate, cleaned)
    except (Interrupted, KeyboardInterrupt) as exc:
        interrupted = str(exc) or "SIGINT"
    except Exception as exc:  # noqa: BLE001 - say what broke, still end with the JSON line
        console.print(Text(f"demo failed: {exc}", style="red"))
        result = {"devices": args.devices, "succeeded": 0, "failed": args.devices,
                  "seconds": None, "error": str(exc)}
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    sys.stdout.flush()
    folder = f"kept {work}" if keep else f"removed {work}"
    if interrupted:
        stopped = " and ".join(reversed(cleaned)) if cleaned else "nothing had started"
        print(f"demo: interrupted ({interrupted}); stopped {stopped}; {folder}",
              file=sys.stderr, flush=True)
        return 130
    if keep:
        print(f"demo: the work folder is kept: {work}", file=sys.stderr, flush=True)
    print(json.dumps(result), flush=True)
    return 0 if result["failed"] == 0 and result["succeeded"] == result["devices"] else 1


if __name__ == "__main__":
    sys.exit(main())
