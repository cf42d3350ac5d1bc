"""`fota package|task|device`: the console's operations on a platform data folder.

A thin layer: `platform.client.connect(DIR)` reaches the running service's admin API (or
the store directly when no service runs on DIR); each command calls one named operation
of that `PlatformOps`. Commands that change something print the result as one JSON
document (what scripts capture); commands that show things print a table, or JSON with
`--json` (cli/output.py: ISO 8601 times, device text escaped).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .output import Finite, cell, emit_json, fail, input_time, iso, print_table

if TYPE_CHECKING:
    from ..platform.client import PlatformOps

DATA = click.option("--data", "data_dir", required=True,
                    type=click.Path(file_okay=False, path_type=Path),
                    help="Platform data folder (holds service.json, the store, the packages).")
JSON = click.option("--json", "as_json", is_flag=True,
                    help="Print JSON for machines instead of a table.")
RESULT_JSON = click.option("--json", "as_json", is_flag=True,
                           help="Accepted for symmetry: the result is always printed as JSON.")
STATE_STYLES = {"succeeded": "green", "failed": "red", "timed_out": "red",
                "cancelled": "yellow", "upgrading": "cyan", "pending": "white"}


@contextmanager
def platform_ops(data_dir: Path) -> Iterator[PlatformOps]:
    """The platform on DIR; a PlatformError or OSError becomes a clear message and exit 2."""
    from ..platform.client import connect
    from ..platform.validate import PlatformError

    try:
        ops = connect(data_dir)
    except PlatformError as exc:
        fail(str(exc))
    try:
        yield ops
    except (PlatformError, OSError) as exc:
        fail(str(exc))
    finally:
        ops.close()


def finite(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """A click callback: a number option must be finite (FloatRange lets nan and inf pass)."""
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a finite number of seconds")
    return value


# == fota package =======================================================================
@click.group("package")
def package_group() -> None:
    """Firmware packages, as in CTWing's console.

    A package is CTWing's "firmware package": an image with its version and digests."""


@package_group.command("create")
@DATA
@click.option("--file", "file", type=click.Path(dir_okay=False), help="Local firmware image.")
@click.option("--url", help="Remote firmware address, fetched once by the platform.")
@click.option("--version", "version",
              help="Version number devices report (default: the one the image carries, in "
                   "its ESP32 app descriptor or bundle header; a different one is refused).")
@click.option("--name", help="Version name (default: the version).")
@click.option("--product", help="Product.")
@click.option("--module", help="Module (default MCU).")
@click.option("--sign", type=click.Choice(["md5", "sha256"]), default="md5", show_default=True,
              help="Digest the notice carries for the device to check the download: MD5 "
                   "always; sha256 adds SHA-256. Not code signing (for that: `fota sign`).")
@click.option("--desc", help="Description.")
@RESULT_JSON
def package_create(data_dir: Path, file: str | None, url: str | None, version: str | None,
                   name: str | None, product: str | None, module: str | None, sign: str,
                   desc: str | None, as_json: bool) -> None:
    """Store a firmware package; prints it as JSON (with its id)."""
    if bool(file) == bool(url):
        fail("give exactly one of --file or --url")
    with platform_ops(data_dir) as ops:
        package = ops.create_package(file=file, url=url, version=version, name=name,
                                     product=product, module=module, sign=sign, desc=desc)
    emit_json(package)


@package_group.command("list")
@DATA
@JSON
def package_list(data_dir: Path, as_json: bool) -> None:
    """All packages: a table, or JSON with --json."""
    with platform_ops(data_dir) as ops:
        packages = ops.list_packages()
    if as_json:
        emit_json(packages)
        return
    print_table(f"{len(packages)} package(s)", ("id", "version", "size", "created", "name"),
                ([p["id"], p["version"], p.get("size", ""), iso(p.get("created")),
                  p.get("name", "")] for p in packages),
                no_wrap=("id", "version", "size", "created"))


@package_group.command("show")
@DATA
@click.argument("package_id")
@JSON
def package_show(data_dir: Path, package_id: str, as_json: bool) -> None:
    """One package: a table of its fields, or JSON with --json."""
    with platform_ops(data_dir) as ops:
        package = ops.get_package(package_id)
    if as_json:
        emit_json(package)
        return
    print_table(f"package {package['id']}", ("field", "value"),
                ([k, iso(v) if k == "created" else v] for k, v in package.items()),
                no_wrap=("field",))


# == fota task ==========================================================================
@click.group("task")
def task_group() -> None:
    """Upgrade tasks: create, add devices, start, show, watch, cancel.

    A task's id is the platform's; each device in it has a sub-task, whose id is the
    `taskId` the device sees in its notice and reports back (both in `task show`).
    """


@task_group.command("create")
@DATA
@click.option("--package", "package", required=True, help="Package id.")
@click.option("--name", required=True, help="Task name.")
@click.option("--desc", help="Description.")
@click.option("--start", help="Start time, ISO 8601 (the task starts by itself then); "
                               "without an offset it is local time.")
@click.option("--end", help="End time, ISO 8601 (active sub-tasks time out then); "
                             "without an offset it is local time.")
@click.option("--wave", "waves", multiple=True, metavar="N|P%",
              help="A wave's size (repeat, in order; the last wave takes the rest).")
@click.option("--max-failures", metavar="N|P%",
              help="Failures (a count, or a percentage of the ended devices) that pause the task.")
@click.option("--min-ended", type=click.IntRange(min=0), default=0, show_default=True,
              help="Devices that must have ended before failures count.")
@click.option("--on-failure", type=click.Choice(["pause", "stop"]), default="pause",
              show_default=True, help="What a failed threshold does.")
@click.option("--approve-waves", is_flag=True, help="Each next wave waits for `task approve`.")
@click.option("--from-version", "from_versions", multiple=True, metavar="V",
              help="Only devices running version V (repeat for several).")
@click.option("--group", "groups", multiple=True, metavar="G",
              help="The devices tagged G join the task when it starts (repeat).")
@click.option("--continuous", is_flag=True,
              help="Matching devices that inform later join, until the task ends or stops.")
@click.option("--window", "windows", multiple=True, metavar="SPEC",
              help="Notices only inside this recurring window, e.g. "
                   "'mon-fri 22:00-05:00 Europe/Berlin' (repeat).")
@click.option("--allow-downgrade", is_flag=True,
              help="Allow a package older than another of its product (a fleet rollback).")
@RESULT_JSON
def task_create(data_dir: Path, package: str, name: str, desc: str | None, start: str | None,
                end: str | None, as_json: bool, **rollout: Any) -> None:
    """Create an upgrade task; prints it as JSON (with its id). The rollout options
    (docs/platform.md, "Rollouts") split it into waves with thresholds, filters, windows."""
    from ..platform.validate import DEVICE_RULE, device_id_problem

    start, end = input_time(start, "--start"), input_time(end, "--end")
    for group in rollout.get("groups") or ():
        if device_id_problem(group):  # group names follow the device-id rule
            fail(f"--group {group!r:.80}: invalid group name: {DEVICE_RULE}")
    spec = {k: list(v) if isinstance(v, tuple) else v for k, v in rollout.items()
            if v not in ((), None, False, 0, "pause")}
    with platform_ops(data_dir) as ops:
        task = ops.create_task(package=package, name=name, desc=desc, start=start, end=end,
                               rollout=spec or None)
    emit_json(task)


@task_group.command("list")
@DATA
@JSON
def task_list(data_dir: Path, as_json: bool) -> None:
    """All tasks with per-state counts: a table, or JSON with --json."""
    with platform_ops(data_dir) as ops:
        tasks = ops.list_tasks()
    if as_json:
        emit_json(tasks)
        return
    print_table(f"{len(tasks)} task(s)", ("task", "name", "package", "state", "devices"),
                ([t["id"], t.get("name", ""), t.get("package", ""), t.get("state", ""),
                  ", ".join(f"{n} {k}" for k, n in (t.get("counts") or {}).items())]
                 for t in tasks), no_wrap=("task", "package"))


def _results(results: list[dict[str, Any]]) -> None:
    emit_json(results)
    if not any(r.get("ok") for r in results):
        sys.exit(1)


@task_group.command("add-devices")
@DATA
@click.argument("task_id")
@click.argument("devices", nargs=-1, required=True)
@RESULT_JSON
def task_add_devices(data_dir: Path, task_id: str, devices: tuple[str, ...],
                     as_json: bool) -> None:
    """Add devices to a task; one JSON result per device (exit 1 when none was added)."""
    with platform_ops(data_dir) as ops:
        results = ops.add_devices(task_id, list(devices))
    _results(results)


@task_group.command("import")
@DATA
@click.argument("task_id")
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@RESULT_JSON
def task_import(data_dir: Path, task_id: str, csv_file: Path, as_json: bool) -> None:
    """Import a device list (CSV with a device/deviceId column, or one id a line)."""
    try:
        text = csv_file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {csv_file}: {exc}")
    with platform_ops(data_dir) as ops:
        results = ops.import_devices(task_id, text)
    _results(results)


@task_group.command("start")
@DATA
@click.argument("task_id")
@RESULT_JSON
def task_start(data_dir: Path, task_id: str, as_json: bool) -> None:
    """Start a task now; prints the task as `task show --json` does."""
    with platform_ops(data_dir) as ops:
        task = ops.start_task(task_id)
    emit_json(task)


@task_group.command("show")
@DATA
@click.argument("task_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines instead of a table.")
def task_show(data_dir: Path, task_id: str, as_json: bool) -> None:
    """Per-device details of a task: a table with progress bars, or JSON.

    The table's title has the platform's task id; the `sub-task` column is the id each
    device sees as `taskId` in its notice, progress reports and log.
    """
    with platform_ops(data_dir) as ops:
        task = ops.get_task(task_id)
    if as_json:
        # These keys (the API's GET /api/tasks/{id} has the task's details); state may be
        # paused or stopped, with its reason.
        emit_json({"id": task["id"], "state": task["state"], "reason": task.get("reason"),
                   "waiting": task.get("waiting"), "waves": task.get("waves", []),
                   "devices": task["devices"]})
        return
    from rich.progress_bar import ProgressBar

    title = (f"task {task['id']} {task['name']!r} -> {task['version']}: {task['state']}"
             f" (started {iso(task.get('started')) or '-'})")
    why = task.get("reason") or task.get("waiting")
    if why:
        title += f"\n{why}"
    rows = []
    for d in task["devices"]:
        step = d["step"] if d["state"] != "succeeded" else 100
        rows.append([d["device"], d.get("subtask", ""), cell(d["state"],
                     STATE_STYLES.get(d["state"], "")),
                     ProgressBar(total=100, completed=max(0, step or 0), width=10),
                     d["step"], d.get("kind") or "-", d["desc"]])
    # kind: the file the device was offered (full, compressed or delta; - before a notice)
    print_table(title, ("device", "sub-task", "state", "progress", "step", "kind", "desc"),
                rows, no_wrap=("sub-task", "state", "step", "kind"))
    if task.get("waves"):
        print_table("waves", ("wave", "amount", "size", "state", "succeeded", "failed",
                              "success"), wave_rows(task["waves"]))


@task_group.command("watch")
@DATA
@click.argument("task_id")
@click.option("--json", "as_json", is_flag=True,
              help="Stream one JSON line per change (a device's state, step or desc, or the "
                   "task's state) instead of live bars.")
@click.option("--interval", type=Finite(min=0.1), default=0.5, show_default=True,
              callback=finite,
              help="Seconds between looks at the platform.")
@click.option("--timeout", type=Finite(min=0), default=None, callback=finite,
              help="Stop watching after this many seconds (exit 3); default: until the task "
                   "ends or Ctrl-C.")
def task_watch(data_dir: Path, task_id: str, as_json: bool, interval: float,
               timeout: float | None) -> None:
    """Live per-device bars and counts until the task ends (or Ctrl-C).

    Exit status: 0 when every device succeeded, 1 when the task ended otherwise, 3 at
    --timeout, 130 on Ctrl-C (the task itself goes on).
    """
    from .watch import watch

    with platform_ops(data_dir) as ops:
        code = watch(ops, task_id, as_json, interval, timeout)
    sys.exit(code)


@task_group.command("cancel")
@DATA
@click.argument("task_id")
@click.argument("devices", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Cancel every active sub-task.")
@RESULT_JSON
def task_cancel(data_dir: Path, task_id: str, devices: tuple[str, ...], all_: bool,
                as_json: bool) -> None:
    """Cancel some devices' sub-tasks, or --all."""
    if bool(devices) == all_:
        fail("give device ids or --all (not both)")
    with platform_ops(data_dir) as ops:
        results = ops.cancel(task_id, None if all_ else list(devices))
    emit_json(results)
    if devices and not any(r.get("ok") for r in results):
        sys.exit(1)


def wave_rows(waves: list[dict[str, Any]]) -> list[list[Any]]:
    """Table rows of a task's waves (task show, task stats)."""
    return [[w["index"], w.get("amount", ""), w["size"], w["state"], w["succeeded"],
             w["failed"], "-" if w.get("success_rate") is None else
             f"{w['success_rate'] * 100:.0f}%"] for w in waves]


# == fota device ========================================================================
@click.group("device")
def device_group() -> None:
    """Devices the platform has seen."""


@device_group.command("list")
@DATA
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines instead of a table.")
def device_list(data_dir: Path, as_json: bool) -> None:
    """Devices seen: id, last reported version, last seen, online."""
    with platform_ops(data_dir) as ops:
        devices = ops.list_devices()
    if as_json:
        emit_json(devices)
        return
    print_table(f"{len(devices)} device(s)", ("device", "version", "last seen", "online"),
                ([d["id"], d.get("version") or "", iso(d.get("last_seen")),
                  "yes" if d.get("online") else "no"] for d in devices),
                no_wrap=("last seen",))


COMMANDS: list[click.Command] = [package_group, task_group, device_group]
