"""Every `fota` command and option explains itself in --help (#13.13)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import click
from fota_host.cli import cli


def commands(cmd: click.Command, path: tuple[str, ...] = ("fota",)
             ) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    yield path, cmd
    if isinstance(cmd, click.Group):
        for name, sub in cmd.commands.items():
            yield from commands(sub, (*path, name))


def test_every_command_and_option_has_help() -> None:
    missing = []
    for path, cmd in commands(cli):
        if not (cmd.help or cmd.short_help):
            missing.append(" ".join(path))
        for param in cmd.params:
            if isinstance(param, click.Option) and not param.help and "--help" not in param.opts:
                missing.append(f"{' '.join(path)} {'/'.join(param.opts)}")
    assert missing == [], "no help text: " + ", ".join(missing)
    assert len(list(commands(cli))) > 30          # the walk reached the whole tree


def test_help_runs_for_every_command() -> None:
    from click.testing import CliRunner

    runner = CliRunner()
    for path, _ in commands(cli):
        result = runner.invoke(cli, [*path[1:], "--help"])
        assert result.exit_code == 0 and "Usage:" in result.output, (path, result.output)
    proc = subprocess.run([sys.executable, "-m", "fota_host", "task", "watch", "--help"],
                          capture_output=True, text=True, timeout=60)   # the real command too
    assert proc.returncode == 0 and "--json" in proc.stdout


def test_no_number_option_takes_nan_or_infinity() -> None:
    """Every number option of every command refuses nan and inf with a usage error
    (click's FloatRange lets them through: `--push-rate nan` or `--timeout inf` would then
    hang a wait or break a calculation far from the flag)."""
    checked = []
    for path, cmd in commands(cli):
        for param in cmd.params:
            if isinstance(param.type, (click.FloatRange, click.types.FloatParamType)):
                for bad in ("nan", "inf", "-inf", "NaN", "Infinity"):
                    try:
                        param.type.convert(bad, param, None)
                    except click.BadParameter:
                        continue
                    raise AssertionError(f"{' '.join(path)} {'/'.join(param.opts)} takes {bad}")
                checked.append(param.opts[0])
    assert len(checked) > 15              # the walk reached the number options


def test_a_nan_option_is_a_usage_error_on_the_command_line(tmp_path) -> None:
    proc = subprocess.run([sys.executable, "-m", "fota_host", "platform", "serve", "--data",
                           str(tmp_path / "d"), "--push-rate", "nan"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--push-rate" in proc.stderr and "finite" in proc.stderr
    assert not (tmp_path / "d").exists()
