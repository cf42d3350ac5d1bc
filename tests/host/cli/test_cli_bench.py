"""`make bench` on a machine without the tools it compares against: it installs them (root
with apt-get) or stops with one line saying what to install; it never skips figures
silently (#13.12)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from fota_host import paths

RUN = [sys.executable, str(paths.repo_root() / "bench" / "run.py")]


def bench(tool_path: Path | str, *only: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "FOTA_BENCH_TOOL_PATH": str(tool_path), "FOTA_BENCH_NO_INSTALL": "1"}
    return subprocess.run([*RUN, *only], capture_output=True, text=True, timeout=120, env=env)


def test_missing_tools_stop_the_bench_with_one_line(tmp_path: Path) -> None:
    proc = bench(tmp_path, "bench_platform")
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "make bench needs mosquitto, mosquitto_pub, mosquitto_sub, nginx, curl" in proc.stderr
    assert "apt-get install curl mosquitto mosquitto-clients nginx" in proc.stderr


def test_only_the_missing_tool_is_named(tmp_path: Path) -> None:
    for tool in ("mosquitto", "mosquitto_pub", "mosquitto_sub", "curl", "pg_ctlcluster"):
        found = shutil.which(tool, path=os.environ["PATH"] + ":/usr/sbin:/sbin")
        assert found, f"{tool} is needed by this test"
        (tmp_path / tool).symlink_to(found)
    proc = bench(tmp_path, "bench_platform")
    assert proc.returncode == 2
    assert "needs nginx:" in proc.stderr and "apt-get install nginx`" in proc.stderr


def test_postgresql_is_named_for_the_scale_out_figures(tmp_path: Path) -> None:
    for tool in ("mosquitto", "mosquitto_pub", "mosquitto_sub", "curl", "nginx"):
        found = shutil.which(tool, path=os.environ["PATH"] + ":/usr/sbin:/sbin")
        assert found, f"{tool} is needed by this test"
        (tmp_path / tool).symlink_to(found)
    proc = bench(tmp_path, "bench_scaleout")
    assert proc.returncode == 2
    assert "needs pg_ctlcluster:" in proc.stderr and "apt-get install postgresql`" in proc.stderr


def test_with_every_tool_the_bench_runs() -> None:
    search = os.environ["PATH"] + ":/usr/local/sbin:/usr/sbin:/sbin"
    proc = bench(search, "bench_nothing_by_this_name")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {}
