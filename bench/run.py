"""`make bench`: run every bench/bench_*.py module's run() and print one JSON object last.

Each module returns a dict of figures; progress goes to stderr, the JSON to stdout.

The figures compare against system tools (mosquitto and its clients, nginx, curl). None
is skipped silently: missing tools are installed with apt-get when running as root on a
Debian-like system (as .ci/run does for the tests), otherwise the bench stops at once
with one line saying what to install. FOTA_BENCH_NO_INSTALL=1 never installs;
FOTA_BENCH_TOOL_PATH replaces the folders searched (PATH plus the sbin folders).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

# tool -> Debian package
TOOLS = {"mosquitto": "mosquitto", "mosquitto_pub": "mosquitto-clients",
         "mosquitto_sub": "mosquitto-clients", "nginx": "nginx", "curl": "curl",
         "pg_ctlcluster": "postgresql"}  # bench_scaleout: PostgreSQL in a temp folder


def _search_path() -> str:
    return os.environ.get("FOTA_BENCH_TOOL_PATH") or ":".join(
        [os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])


def missing_tools() -> list[str]:
    return [t for t in TOOLS if not shutil.which(t, path=_search_path())]


def ensure_tools() -> str | None:
    """None when every tool is there (installing them if allowed), else the one line."""
    missing = missing_tools()
    if not missing:
        return None
    packages = sorted({TOOLS[t] for t in missing})
    can_install = (os.environ.get("FOTA_BENCH_NO_INSTALL") != "1" and os.geteuid() == 0
                   and shutil.which("apt-get"))
    if can_install:
        print(f"bench: installing {' '.join(packages)} (apt-get)", file=sys.stderr, flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", *packages], env=env, check=False,
                       stdout=subprocess.DEVNULL)
        missing = missing_tools()
        if not missing:
            return None
    return (f"make bench needs {', '.join(missing)}: install them with `sudo apt-get install "
            f"{' '.join(packages)}` (or run make bench as root, which installs them)")


def main() -> int:
    figures: dict[str, object] = {}
    only = sys.argv[1:]
    problem = ensure_tools()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    for path in sorted(Path(__file__).parent.glob("bench_*.py")):
        if only and path.stem not in only:
            continue
        spec = importlib.util.spec_from_file_location(path.stem, path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        started = time.monotonic()
        print(f"bench: {path.stem} ...", file=sys.stderr, flush=True)
        try:
            spec.loader.exec_module(module)
            figures.update(module.run())
        except Exception:  # a failing bench is reported, the others still run
            traceback.print_exc()
            figures[f"{path.stem}_error"] = True
        print(f"bench: {path.stem} done in {time.monotonic() - started:.1f}s", file=sys.stderr)
    print(json.dumps(figures, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
