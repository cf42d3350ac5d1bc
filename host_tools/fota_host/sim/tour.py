"""How `make demo` shows itself to a person: numbered steps, each `fota` command echoed as
it could be typed (broken with ` \\` to fit 80 columns) and run in the work folder, live
progress bars per device, and the summary table of what the platform and each board's
flash say. What the demo does is `demo.py`'s."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table
from rich.text import Text

from ..cli.output import safe
from .fleet import Fleet

TERMINAL = ("succeeded", "failed", "cancelled", "timed_out")
WIDTH = 78              # command lines fit an 80-column terminal


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


def summary(rows: list[dict[str, Any]], console: Console, seconds: float, version: str) -> None:
    """The table of every device (its wave, full or delta, bytes, state, the version its
    flash runs), the bytes saved by deltas, and a red line per device that did not end well."""
    from rich import box

    table = Table(title=f"Upgrade to {version}: {sum(r['ok'] for r in rows)}/{len(rows)} devices "
                        f"in {seconds}s", box=box.SIMPLE_HEAD, title_justify="left",
                  pad_edge=False, collapse_padding=True)
    for col in ("device", "board", "wave", "kind", "bytes", "state", "step", "running", "ok"):
        table.add_column(col, no_wrap=True, justify="right" if col == "bytes" else "left")
    for r in sorted(rows, key=lambda r: r["device"]):
        colour = "green" if r["ok"] else "red"
        got = f"{r['bytes']:,}" if r["state"] == "succeeded" else "-"
        table.add_row(r["device"], r["board"], str(r.get("wave") or "-"), r.get("kind") or "-",
                      got, Text(r["state"], style=colour), str(r["step"]),
                      str(r["version"]), "yes" if r["confirmed"] else "no")
    console.print(table)
    done = [r for r in rows if r["state"] == "succeeded"]
    got, full = sum(r["bytes"] for r in done), sum(r["full"] for r in done)
    deltas = sum(r.get("kind") == "delta" for r in done)
    console.print(Text(f"The upgraded boards downloaded {got:,} bytes; full images for all "
                       f"would be {full:,}: saved {full - got:,} bytes ({deltas} delta"
                       f"{'s' if deltas != 1 else ''}).", style="bold"))
    for r in sorted(rows, key=lambda r: r["device"]):
        if not r["ok"]:
            console.print(Text(f"{r['device']}: {r['state']} {r['step']} {safe(r['desc'])}",
                               style="red"))

