"""`fota platform|package|task|device`: the local CTWing-compatible platform."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
