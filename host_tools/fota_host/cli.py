"""`fota`: the command line. A thin layer: every command calls functions the tests call too.

Command groups live in their own modules (cli_*.py) and are attached here.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click


def emit_json(obj: Any) -> None:
    """One JSON document on stdout (what machines read)."""
    click.echo(json.dumps(obj, sort_keys=False))


def fail(message: str, code: int = 2) -> None:
    """A clear error on stderr and a non-zero exit."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fota-host")
def cli() -> None:
    """MicroPython FOTA over MQTT: platform, packaging, simulation and deploy tools."""


@cli.command("build")
@click.option("--refetch", is_flag=True, help="Download the device libraries again.")
def build_cmd(refetch: bool) -> None:
    """Fetch the device libraries and compile the device code to .mpy (build/)."""
    from . import devicebuild

    try:
        if refetch:
            devicebuild.fetch_libs(force=True)
        counts = devicebuild.build_device(fetch=True)
    except (devicebuild.BuildError, OSError) as exc:
        fail(str(exc))
    emit_json({"compiled": counts})


def _attach_groups() -> None:
    from . import cli_boards, cli_pack, cli_platform, cli_sim

    for module in (cli_pack, cli_sim, cli_platform, cli_boards):
        for command in module.COMMANDS:
            cli.add_command(command)


_attach_groups()


def main() -> None:
    cli()
