"""`fota task watch TASK`: follow a task until it ends, as live bars or as JSON lines.

It looks at the platform every `interval` seconds (`PlatformOps.get_task`) and shows what
changed: with a terminal, one bar per device plus the counts per state; with `--json`,
one line per change:
    {"time": ISO, "task": 1, "device": "dev-1", "subtask": 7, "state": "upgrading",
     "step": 40, "desc": "downloading"}
    {"time": ISO, "task": 1, "state": "finished", "counts": {"succeeded": 2}}
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .output import cell, column_style, console, emit_json_line, iso, now_iso, safe, title_cell

if TYPE_CHECKING:
    from ..platform.client import PlatformOps

FINAL = ("succeeded", "failed", "cancelled", "timed_out")
STYLES = {"succeeded": "green", "failed": "red", "timed_out": "red", "cancelled": "yellow",
          "upgrading": "cyan", "pending": "white"}
INTERRUPTED, TIMED_OUT = 130, 3


def counts(task: dict[str, Any]) -> dict[str, int]:
    return dict(Counter(d["state"] for d in task["devices"]))


def outcome(task: dict[str, Any]) -> int:
    """0 when every device succeeded, else 1."""
    ok = task["devices"] and all(d["state"] == "succeeded" for d in task["devices"])
    return 0 if ok else 1


def _table(task: dict[str, Any]) -> Any:
    from rich import box
    from rich.progress_bar import ProgressBar
    from rich.table import Table

    summary = ", ".join(f"{n} {k}" for k, n in sorted(counts(task).items())) or "no devices"
    table = Table(title=title_cell(f"task {task['id']} {task.get('name', '')!r} -> "
                                   f"{task.get('version', '?')}: {task['state']} ({summary})"),
                  title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for col in ("device", "sub-task", "progress", "step", "state", "desc"):
        table.add_column(col, **column_style(col))
    for d in task["devices"]:
        done = 100 if d["state"] == "succeeded" else max(0, d.get("step") or 0)
        table.add_row(cell(d["device"]), cell(d.get("subtask", "")),
                      ProgressBar(total=100, completed=done, width=20), cell(d.get("step")),
                      cell(d["state"], STYLES.get(d["state"], "")), cell(d.get("desc") or ""))
    return table


def _changes(task: dict[str, Any], seen: dict[str, tuple]) -> list[dict[str, Any]]:
    lines = []
    for d in task["devices"]:
        key = (d["state"], d.get("step"), d.get("desc"))
        if seen.get(d["device"]) != key:
            seen[d["device"]] = key
            lines.append({"time": now_iso(), "task": task["id"], "device": d["device"],
                          "subtask": d.get("subtask"), "state": d["state"],
                          "step": d.get("step"), "desc": d.get("desc")})
    return lines


@contextlib.contextmanager
def _ctrl_c() -> Iterator[threading.Event]:
    """An event Ctrl-C (SIGINT) sets, instead of a KeyboardInterrupt raised wherever the
    main thread happens to be. One raised inside rich's `Live.start()` left its refresh
    thread running and stderr redirected, and the "interrupted" line then deadlocked
    between the console's lock and the live display's (a watch that never ended)."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop  # signal handlers belong to the main thread: Ctrl-C stays as it is
        return
    def first(*_: Any) -> None:  # a second Ctrl-C interrupts at once (a slow platform)
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = signal.signal(signal.SIGINT, first)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def watch(ops: PlatformOps, task_id: str, as_json: bool, interval: float,
          timeout: float | None) -> int:
    """Follow the task; returns the exit status (see `fota task watch --help`): 0 every
    device succeeded, 1 not, 3 `timeout` seconds passed, 130 Ctrl-C (the task goes on)."""
    end = None if timeout is None else time.monotonic() + timeout
    try:
        with _ctrl_c() as stop:
            if as_json:
                code = _watch_json(ops, task_id, interval, end, stop)
            else:
                code = _watch_live(ops, task_id, interval, end, stop)
    except KeyboardInterrupt:  # Ctrl-C before the handler was in place
        code = None
    if code is None:
        print(f"watch: interrupted; task {safe(task_id)} goes on "
              f"(fota task show {safe(task_id)} --data ... looks again)", file=sys.stderr)
        return INTERRUPTED
    return code


ENDED = ("finished", "stopped")  # a paused task may resume: watched on


def _watch_json(ops: PlatformOps, task_id: str, interval: float, end: float | None,
                stop: threading.Event) -> int | None:
    seen: dict[str, tuple] = {}
    state = None
    while not stop.is_set():
        task = ops.get_task(task_id)
        for line in _changes(task, seen):
            emit_json_line(line)
        if task["state"] != state:
            state = task["state"]
            emit_json_line({"time": now_iso(), "task": task["id"], "state": state,
                            "counts": counts(task)})
        if state in ENDED:
            return outcome(task)
        if end is not None and time.monotonic() >= end:
            emit_json_line({"time": now_iso(), "task": task["id"], "state": state,
                            "counts": counts(task), "watch": "timeout"})
            return TIMED_OUT
        stop.wait(interval)
    return None


def _watch_live(ops: PlatformOps, task_id: str, interval: float, end: float | None,
                stop: threading.Event) -> int | None:

    out = console()
    task = ops.get_task(task_id)
    if task["state"] == "not_started":
        when = f" (or it starts by itself at {iso(task['start'])})" if task.get("start") else ""
        out.print(cell(f"task {task['id']} has not started: `fota task start` starts it{when}; "
                       "watching ..."))
    try:
        return _follow(ops, task_id, interval, end, stop, out, task)
    finally:
        if not out.is_terminal:   # piped, Live leaves its last render without a newline
            out.line()


def _follow(ops: PlatformOps, task_id: str, interval: float, end: float | None,
            stop: threading.Event, out: Any, task: dict[str, Any]) -> int | None:
    from rich.live import Live

    with Live(_table(task), console=out, refresh_per_second=4, transient=False) as live:
        while True:
            if task["state"] in ENDED:
                live.update(_table(task))
                break
            if end is not None and time.monotonic() >= end:
                live.update(_table(task))
                out.print(cell(f"watch: --timeout reached; task {task['id']} is "
                               f"{task['state']}"))
                return TIMED_OUT
            if stop.wait(interval):
                return None
            task = ops.get_task(task_id)
            live.update(_table(task))
    return outcome(task)
