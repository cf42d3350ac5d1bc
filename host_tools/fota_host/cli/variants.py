"""`fota package add-delta` and `fota package compress`: a package's smaller files, made by
the platform (attached to the package group by the root)."""

from __future__ import annotations

from pathlib import Path

import click

from .output import emit_json
from .tasks import DATA, platform_ops


@click.command("add-delta")
@DATA
@click.argument("package_id")
@click.option("--from", "base", required=True, metavar="OLD_PACKAGE",
              help="The package the devices run now (the delta's base).")
def add_delta_cmd(data_dir: Path, package_id: str, base: str) -> None:
    """Make a delta from OLD_PACKAGE to PACKAGE_ID: devices that inform OLD_PACKAGE's
    version get it instead of the full image. Prints kind, id, size, md5, sha256, ratio."""
    with platform_ops(data_dir) as ops:
        variant = ops.add_variant(package_id, "delta", base)
    emit_json(variant)


@click.command("compress")
@DATA
@click.argument("package_id")
def compress_cmd(data_dir: Path, package_id: str) -> None:
    """Make the package's compressed file: devices with no delta for their version get it
    instead of the full image. Prints kind, id, size, md5, sha256, ratio."""
    with platform_ops(data_dir) as ops:
        variant = ops.add_variant(package_id, "compressed")
    emit_json(variant)


PACKAGE_COMMANDS: list[click.Command] = [add_delta_cmd, compress_cmd]
