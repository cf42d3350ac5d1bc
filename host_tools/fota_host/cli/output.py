"""The CLI's one way to answer: a JSON document on stdout, or an error on stderr and exit."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import click


def emit_json(obj: Any) -> None:
    """One JSON document on stdout (what machines read)."""
    click.echo(json.dumps(obj, sort_keys=False))


def fail(message: str, code: int = 2) -> NoReturn:
    """A clear error on stderr and a non-zero exit."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)
