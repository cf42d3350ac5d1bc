"""`fota task pause|resume|stop|approve|stats` and `fota device tag|versions`: the rollout
rules of issue #16 (the rollout options of `fota task create` are in tasks.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .output import emit_json, print_table
from .tasks import DATA, JSON, RESULT_JSON, device_group, platform_ops, task_group, wave_rows


def _verb(name: str, method: str, doc: str) -> click.Command:
    @task_group.command(name, help=doc)
    @DATA
    @click.argument("task_id")
    @RESULT_JSON
    def command(data_dir: Path, task_id: str, as_json: bool) -> None:
        with platform_ops(data_dir) as ops:
            task = getattr(ops, method)(task_id)
        emit_json(task)

    return command


_verb("pause", "pause_task", "Pause a running task: no new notices (devices upgrading "
      "finish); prints the task as JSON.")
_verb("resume", "resume_task", "Resume a paused task (the wave that paused it counts as "
      "accepted, failures are counted afresh).")
_verb("stop", "stop_task", "Stop a task for good: its pending sub-tasks are cancelled "
      "(devices upgrading finish).")
_verb("approve", "approve_task", "Approve the task's next wave (tasks created with "
      "--approve-waves).")


@task_group.command("stats")
@DATA
@click.argument("task_id")
@JSON
def task_stats(data_dir: Path, task_id: str, as_json: bool) -> None:
    """Counts by state, success rate, median/p95 update duration and failures by reason,
    for the task and each wave."""
    with platform_ops(data_dir) as ops:
        stats = ops.task_stats(task_id)
    if as_json:
        emit_json(stats)
        return
    rate = stats.get("success_rate")
    print_table(f"task {stats['id']}: {stats['state']}", ("measure", "value"), [
        ["devices", stats["devices"]],
        ["by state", ", ".join(f"{n} {k}" for k, n in stats["counts"].items()) or "-"],
        ["success rate", "-" if rate is None else f"{rate * 100:.1f}%"],
        ["duration median / p95 (s)",
         " / ".join("-" if stats[k] is None else str(stats[k])
                    for k in ("duration_median_s", "duration_p95_s"))],
    ], no_wrap=("measure",))
    if stats["waves"]:
        print_table("waves", ("wave", "amount", "size", "state", "succeeded", "failed",
                              "success"), wave_rows(stats["waves"]))
    if stats["failures"]:
        print_table("failures by reason", ("devices", "reason"),
                    ([f["devices"], f["reason"]] for f in stats["failures"]))


@device_group.command("tag")
@DATA
@click.argument("devices", nargs=-1, required=True)
@click.option("--add", "add", metavar="G", help="Put the devices in group G.")
@click.option("--remove", "remove", metavar="G", help="Take the devices out of group G.")
@RESULT_JSON
def device_tag(data_dir: Path, devices: tuple[str, ...], add: str | None,
               remove: str | None, as_json: bool) -> None:
    """Tag devices with a group (`fota task create --group G` takes its members)."""
    if (add is None) == (remove is None):
        from .output import fail

        fail("give exactly one of --add G or --remove G")
    with platform_ops(data_dir) as ops:
        results = ops.tag_devices(list(devices), add=add, remove=remove)
    emit_json(results)
    if not any(r.get("ok") for r in results):
        sys.exit(1)


@device_group.command("versions")
@DATA
@JSON
def device_versions(data_dir: Path, as_json: bool) -> None:
    """Versions running across the fleet (the last one each device informed)."""
    with platform_ops(data_dir) as ops:
        versions = ops.device_versions()
    if as_json:
        emit_json(versions)
        return
    print_table(f"{versions['devices']} device(s)", ("version", "devices", "share"),
                ([v["version"] or "(unknown)", v["devices"], f"{v['share'] * 100:.1f}%"]
                 for v in versions["versions"]))


COMMANDS: list[click.Command] = []  # added to the task and device groups above
