"""`fota package|task|device`: the console's operations on a platform data folder.

A thin layer: `platform.client.connect(DIR)` reaches the running service's admin API (or
the store directly when no service runs on DIR); each command calls one named operation
of that `PlatformOps` and prints its JSON result.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .output import emit_json, fail

if TYPE_CHECKING:
    from ..platform.client import PlatformOps

DATA = click.option("--data", "data_dir", required=True,
                    type=click.Path(file_okay=False, path_type=Path),
                    help="Platform data folder (holds service.json, the store, the packages).")


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


# == fota package =======================================================================
@click.group("package")
def package_group() -> None:
    """Firmware packages (the console's 'create firmware package')."""


@package_group.command("create")
@DATA
@click.option("--file", "file", type=click.Path(dir_okay=False), help="Local firmware image.")
@click.option("--url", help="Remote firmware address, fetched once by the platform.")
@click.option("--version", "version", required=True, help="Version number devices report.")
@click.option("--name", help="Version name (default: the version).")
@click.option("--product", help="Product.")
@click.option("--module", help="Module (default MCU).")
@click.option("--sign", type=click.Choice(["md5", "sha256"]), default="md5", show_default=True,
              help="Signature method (md5 is always in the notice; sha256 adds sha256).")
@click.option("--desc", help="Description.")
def package_create(data_dir: Path, file: str | None, url: str | None, version: str,
                   name: str | None, product: str | None, module: str | None, sign: str,
                   desc: str | None) -> None:
    """Store a firmware package; prints it as JSON (with its id)."""
    if bool(file) == bool(url):
        fail("give exactly one of --file or --url")
    with platform_ops(data_dir) as ops:
        package = ops.create_package(file=file, url=url, version=version, name=name,
                                     product=product, module=module, sign=sign, desc=desc)
    emit_json(package)


@package_group.command("list")
@DATA
def package_list(data_dir: Path) -> None:
    """All packages as JSON."""
    with platform_ops(data_dir) as ops:
        packages = ops.list_packages()
    emit_json(packages)


@package_group.command("show")
@DATA
@click.argument("package_id")
def package_show(data_dir: Path, package_id: str) -> None:
    """One package as JSON."""
    with platform_ops(data_dir) as ops:
        package = ops.get_package(package_id)
    emit_json(package)


# == fota task ==========================================================================
@click.group("task")
def task_group() -> None:
    """Upgrade tasks: create, add devices, start, watch, cancel."""


@task_group.command("create")
@DATA
@click.option("--package", "package", required=True, help="Package id.")
@click.option("--name", required=True, help="Task name.")
@click.option("--desc", help="Description.")
@click.option("--start", help="Start time, ISO 8601 (the task starts by itself then).")
@click.option("--end", help="End time, ISO 8601 (active sub-tasks time out then).")
def task_create(data_dir: Path, package: str, name: str, desc: str | None, start: str | None,
                end: str | None) -> None:
    """Create an upgrade task; prints it as JSON (with its id)."""
    with platform_ops(data_dir) as ops:
        task = ops.create_task(package=package, name=name, desc=desc, start=start, end=end)
    emit_json(task)


@task_group.command("list")
@DATA
def task_list(data_dir: Path) -> None:
    """All tasks with per-state counts, as JSON."""
    with platform_ops(data_dir) as ops:
        tasks = ops.list_tasks()
    emit_json(tasks)


def _results(results: list[dict[str, Any]]) -> None:
    emit_json(results)
    if not any(r.get("ok") for r in results):
        sys.exit(1)


@task_group.command("add-devices")
@DATA
@click.argument("task_id")
@click.argument("devices", nargs=-1, required=True)
def task_add_devices(data_dir: Path, task_id: str, devices: tuple[str, ...]) -> None:
    """Add devices to a task; one JSON result per device (exit 1 when none was added)."""
    with platform_ops(data_dir) as ops:
        results = ops.add_devices(task_id, list(devices))
    _results(results)


@task_group.command("import")
@DATA
@click.argument("task_id")
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def task_import(data_dir: Path, task_id: str, csv_file: Path) -> None:
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
def task_start(data_dir: Path, task_id: str) -> None:
    """Start a task now; prints the task as `task show --json` does."""
    with platform_ops(data_dir) as ops:
        task = ops.start_task(task_id)
    emit_json(task)


@task_group.command("show")
@DATA
@click.argument("task_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def task_show(data_dir: Path, task_id: str, as_json: bool) -> None:
    """Per-device details of a task (a table with progress bars, or JSON)."""
    with platform_ops(data_dir) as ops:
        task = ops.get_task(task_id)
    if as_json:
        # Exactly these three keys (the API's GET /api/tasks/{id} has the task's details).
        emit_json({"id": task["id"], "state": task["state"], "devices": task["devices"]})
        return
    from rich.console import Console
    from rich.progress_bar import ProgressBar
    from rich.table import Table

    colours = {"succeeded": "green", "failed": "red", "timed_out": "red",
               "cancelled": "yellow", "upgrading": "cyan", "pending": "white"}
    table = Table(title=f"task {task['id']} {task['name']!r} → {task['version']}: "
                        f"{task['state']}")
    for col in ("device", "state", "progress", "step", "desc"):
        table.add_column(col)
    for d in task["devices"]:
        step = d["step"] if d["state"] != "succeeded" else 100
        table.add_row(d["device"], f"[{colours.get(d['state'], 'white')}]{d['state']}",
                      ProgressBar(total=100, completed=max(0, step), width=20), str(d["step"]),
                      d["desc"])
    Console().print(table)


@task_group.command("cancel")
@DATA
@click.argument("task_id")
@click.argument("devices", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Cancel every active sub-task.")
def task_cancel(data_dir: Path, task_id: str, devices: tuple[str, ...], all_: bool) -> None:
    """Cancel some devices' sub-tasks, or --all."""
    if bool(devices) == all_:
        fail("give device ids or --all (not both)")
    with platform_ops(data_dir) as ops:
        results = ops.cancel(task_id, None if all_ else list(devices))
    emit_json(results)
    if devices and not any(r.get("ok") for r in results):
        sys.exit(1)


# == fota device ========================================================================
@click.group("device")
def device_group() -> None:
    """Devices the platform has seen."""


@device_group.command("list")
@DATA
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def device_list(data_dir: Path, as_json: bool) -> None:
    """Devices seen: id, last reported version, last seen, online."""
    with platform_ops(data_dir) as ops:
        devices = ops.list_devices()
    if as_json:
        emit_json(devices)
        return
    from datetime import datetime, timezone

    from rich.console import Console
    from rich.table import Table

    table = Table(title="devices")
    for col in ("device", "version", "last seen (UTC)", "online"):
        table.add_column(col)
    for d in devices:
        seen = datetime.fromtimestamp(d["last_seen"], timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(d["id"], d["version"] or "", seen, "yes" if d["online"] else "no")
    Console().print(table)


COMMANDS: list[click.Command] = [package_group, task_group, device_group]
