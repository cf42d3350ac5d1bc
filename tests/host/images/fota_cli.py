"""Run the real `fota` command (a subprocess, as a user would)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

FOTA = [sys.executable, "-c", "from fota_host.cli import main; main()"]


def fota(*args: Any, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([*FOTA, *map(str, args)], capture_output=True, text=True, timeout=120)
    if ok:
        assert proc.returncode == 0, proc.stderr
    else:
        assert proc.returncode != 0, proc.stdout
        assert proc.stderr.startswith("error: ") or "Error: " in proc.stderr, proc.stderr
    return proc


def fota_json(*args: Any) -> Any:
    return json.loads(fota(*args).stdout)
