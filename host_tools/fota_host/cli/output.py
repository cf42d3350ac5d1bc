"""How the CLI answers: tables for people, JSON for machines (`--json`), errors on stderr.

Rules every command follows:
- times are ISO 8601 with the local UTC offset (`2026-11-30T14:02:11+01:00`), in tables
  and in JSON (`emit_json` converts the epoch numbers the platform keeps under the keys of
  `TIME_KEYS`); a time typed without an offset is read as local time (`input_time`);
- text that came from a device or a user (ids, desc, names) is data: shown through
  `cell()`, never as Rich markup, with control characters (ESC, CR, ...) and invisible
  format characters shown as escapes (`\\x1b`), so nothing a device sends can restyle,
  move or hide what an operator reads. JSON escapes them by itself.
"""

from __future__ import annotations

import json
import math
import os
import sys
import unicodedata
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import click


class Finite(click.FloatRange):
    """`click.FloatRange` for finite numbers only: FloatRange lets `nan` (every comparison
    with it is false) and `inf` (when there is no max) through, and a duration or rate of
    nan or inf then hangs a wait or breaks a calculation far from the flag."""

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            name = param.opts[0] if param is not None and param.opts else "the value"
            self.fail(f"{name} must be a finite number (got {value})", param, ctx)
        return number


# Keys whose numbers are epoch seconds (the platform's store and API).
TIME_KEYS = frozenset({"created", "updated", "started", "finished", "start", "end",
                       "notified", "last_report", "last_seen", "first_seen"})


def iso(ts: float | None) -> str | None:
    """Epoch seconds as ISO 8601 in local time with its offset (None stays None); a number
    no date can show (infinite, past year 9999: stored before such were refused) as itself."""
    if ts is None:
        return None
    try:
        return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return str(ts)


def now_iso() -> str:
    return datetime.now().astimezone().isoformat(timespec="milliseconds")


def with_iso_times(obj: Any) -> Any:
    """A copy of `obj` with every epoch number under a TIME_KEYS key as `iso()`."""
    if isinstance(obj, dict):
        return {k: iso(v) if k in TIME_KEYS and isinstance(v, (int, float))
                and not isinstance(v, bool) else with_iso_times(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [with_iso_times(v) for v in obj]
    return obj


def input_time(value: str | None, option: str) -> str | None:
    """An ISO 8601 time from the command line, with its offset: a time typed without one
    is local time. A bad value is a clear error naming the option."""
    from ..platform.validate import MAX_TIME, MIN_TIME

    if value is None:
        return None
    try:
        dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        fail(f"{option} {value!r} is not an ISO 8601 time: give e.g. 2026-12-01T08:00 "
             "(local time) or 2026-12-01T08:00+01:00")
    try:
        if dt.tzinfo is None:
            dt = dt.astimezone()           # naive: local time
        ok = MIN_TIME <= dt.timestamp() <= MAX_TIME
    except (OverflowError, OSError, ValueError):
        ok = False
    if not ok:
        fail(f"{option} {value!r} is out of range: give a time from 1970 to 9999")
    return dt.isoformat()


def safe(value: Any, lines: bool = False) -> str:
    """`value` as inert text: control and format characters as escapes (`lines`: newlines
    and tabs kept, for messages of several lines)."""
    out = []
    for ch in str(value if value is not None else ""):
        cat = unicodedata.category(ch)
        if lines and ch in "\n\t":
            out.append(ch)
        elif cat in ("Cc", "Cf", "Zl", "Zp"):
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def cell(value: Any, style: str = "") -> Any:
    """A table cell or line that Rich shows literally (no markup), escaped by `safe()`."""
    from rich.text import Text

    return Text(safe(value), style=style)


def title_cell(value: Any) -> Any:
    """A table title on one line, cut with an ellipsis on a terminal (or a width given by
    COLUMNS) too narrow for it; piped with no width given (Rich then assumes 80 columns)
    it is kept whole and wraps, so a log or a script sees all of it (newcomer review:
    the task's start time was cut off)."""
    text = cell(value)
    if sys.stdout.isatty() or os.environ.get("COLUMNS"):
        text.no_wrap, text.overflow = True, "ellipsis"
    return text


def emit_json(obj: Any) -> None:
    """One JSON document on stdout (what machines read), times as ISO 8601."""
    click.echo(json.dumps(with_iso_times(obj), sort_keys=False))


def emit_json_line(obj: Any) -> None:
    """One JSON line, flushed at once (streams such as `fota task watch --json`)."""
    sys.stdout.write(json.dumps(with_iso_times(obj)) + "\n")
    sys.stdout.flush()


def console() -> Any:
    from rich.console import Console

    return Console(highlight=False)


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]],
                no_wrap: Sequence[str] = ()) -> None:
    """A table for people: every cell through `cell()` unless it is already renderable."""
    from rich import box
    from rich.table import Table

    table = Table(title=title_cell(title), title_justify="left", box=box.SIMPLE_HEAD,
                  pad_edge=False, show_edge=False)
    cells = [[v if hasattr(v, "__rich_console__") or hasattr(v, "__rich__") else cell(v)
              for v in row] for row in rows]
    for col in columns:
        table.add_column(col, **column_style(col, col in no_wrap))
    for row in cells:
        table.add_row(*row)
    console().print(table)


# Columns of free text take the room left and wrap (a name too, as names can be long);
# every other column holds one value (id, version, time, state): kept on one line, cut
# with an ellipsis only on a terminal too narrow for it.
FREE_TEXT = frozenset({"desc", "reason", "value", "title", "name"})


def column_style(name: str, no_wrap: bool = False) -> dict[str, Any]:
    """add_column() settings for a column called `name` (see FREE_TEXT)."""
    if name in FREE_TEXT and not no_wrap:
        return {"overflow": "fold", "ratio": 1}
    return {"no_wrap": True, "overflow": "ellipsis"}


def write_output(path: Path, data: bytes) -> None:
    """Write a command's output file (its folder must exist); an OSError (no such folder,
    no permission, a full disk) is a clear error naming the file, and no partial file
    is left behind."""
    try:
        path.write_bytes(data)
    except OSError as exc:
        try:
            if path.is_file() and path.stat().st_size != len(data):
                path.unlink()
        except OSError:
            pass
        fail(f"cannot write {path}: {exc.strerror or exc}"
             + (" (create its folder first)" if not path.parent.is_dir() else ""))


def fail(message: str, code: int = 2) -> NoReturn:
    """A clear error on stderr and a non-zero exit."""
    click.echo(f"error: {safe(message, lines=True)}", err=True)
    sys.exit(code)
