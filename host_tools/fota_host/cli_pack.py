"""`fota pack`: build and check images."""

from __future__ import annotations

from pathlib import Path

import click

from .cli import emit_json, fail


@click.group("pack")
def pack() -> None:
    """Build and validate firmware images and app bundles."""


@pack.command("sim-image")
@click.option("--board", type=click.Choice(["esp32", "pico_w"]), default="esp32", show_default=True)
@click.option("--version", "version", required=True, help="Version the image carries.")
@click.option("--size", type=click.IntRange(min=1), help="Exact size in bytes.")
@click.option("--chip", default="esp32", show_default=True, help="ESP32 chip the image is for.")
@click.option("--fail-health", is_flag=True, help="Booted, it never passes the health check.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
def sim_image_cmd(board: str, version: str, size: int | None, chip: str, fail_health: bool,
                  output: Path) -> None:
    """A synthetic but valid image for simulated devices; prints size, md5, sha256."""
    from . import bundle, esp_image, images

    try:
        data = images.sim_image(board, version, size, fail_health, chip)
    except (esp_image.ImageError, bundle.BundleError, ValueError) as exc:
        fail(str(exc))
    output.write_bytes(data)
    emit_json({"file": str(output), "board": board, "version": version, **images.digests(data)})


@pack.command("bundle")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--version", "version", required=True)
@click.option("--no-compile", is_flag=True, help="Ship .py sources instead of .mpy.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
def bundle_cmd(folder: Path, version: str, no_compile: bool, output: Path) -> None:
    """An app bundle for file slots (Pico W, unix) from an application folder."""
    from . import bundle, images

    try:
        data = bundle.from_folder(folder, version, compile_py=not no_compile)
    except bundle.BundleError as exc:
        fail(str(exc))
    output.write_bytes(data)
    emit_json({"file": str(output), "version": version, **images.digests(data)})


COMMANDS: list[click.Command] = [pack]
