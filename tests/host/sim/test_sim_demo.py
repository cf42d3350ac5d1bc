"""`make demo` as a newcomer meets it: a tour whose commands fit 80 columns and can be run
again by hand in the kept folder (`KEEP=1`), and a Ctrl-C that ends in one line saying
what was cleaned up (#13.10, #13.11)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import psutil
from fota_host import paths
from helpers import Output, wait_for

DEMO = [sys.executable, "-m", "fota_host.sim.demo"]


def test_make_demo_keep_is_a_tour_that_fits_80_columns(tmp_path: Path) -> None:
    proc = subprocess.run(["make", "--no-print-directory", "-C", str(paths.repo_root()), "demo",
                           "KEEP=1", "DEVICES=2"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "80"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert json.loads(lines[-1])["succeeded"] == 2
    kept = Path(re.search(r"the work folder is kept: (\S+)", proc.stderr).group(1))
    try:
        assert (kept / "platform").is_dir() and (kept / "images").is_dir()
        # commands, continuation lines and the summary fit 80 columns
        assert all(len(line) <= 80 for line in lines), [x for x in lines if len(x) > 80]
        commands = [line for line in lines if line.startswith("$ fota")]
        for shown in ("$ fota platform serve", "$ fota sim fleet", "$ fota package create",
                      "$ fota task start"):
            assert any(c.startswith(shown) for c in commands), shown
        table = lines[next(i for i, x in enumerate(lines) if x.startswith("Upgrade to 2.0.0")):]
        assert sum("succeeded" in row and "yes" in row for row in table) == 2
        # a command from the tour, run again by hand in the kept folder
        start = lines.index("$ fota task start --data platform 1")
        assert start > 0
        again = subprocess.run([sys.executable, "-m", "fota_host", "task", "show", "--data",
                                "platform", "1", "--json"], cwd=kept, capture_output=True,
                               text=True, timeout=60)
        assert json.loads(again.stdout)["state"] == "finished"
    finally:
        import shutil

        shutil.rmtree(kept, ignore_errors=True)


def test_ctrl_c_during_the_demo_is_one_line_and_cleans_up() -> None:
    proc = subprocess.Popen([*DEMO, "--devices", "2", "--slow"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    out = Output(proc)
    try:
        # --slow: the downloads take seconds; interrupt while the boards upgrade
        assert out.wait("Start the tasks", timeout=120), out.lines
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 3                       # the platform and two devices
        os.killpg(proc.pid, signal.SIGINT)              # Ctrl-C: the whole process group
        proc.wait(60)
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    text = out.text() + err
    assert proc.returncode == 130
    assert "Traceback" not in text and "KeyboardInterrupt" not in text
    assert len(err.strip().splitlines()) == 1, err
    message = re.fullmatch(r"demo: interrupted \(SIGINT\); stopped 2 devices and the platform; "
                           r"removed (\S+)\n", err)
    assert message, err
    assert not Path(message.group(1)).exists()
    wait_for(lambda: not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE
                             for c in children), timeout=30, what="no process of the demo left")


def test_the_command_lines_break_between_arguments() -> None:
    from fota_host.sim.demo import command_lines

    words = ["task", "create", "--data", "platform", "--package", "a" * 20, "--name",
             "esp32 to 2.0.0", "--desc", "a description that is rather long too"]
    lines = command_lines(words)
    assert all(len(line) <= 78 for line in lines)
    assert all(line.endswith(" \\") for line in lines[:-1])
    joined = " ".join(line.removesuffix(" \\").strip() for line in lines)
    assert joined.split(" ", 1)[1] == " ".join(
        w if " " not in w else f"'{w}'" for w in ["fota", *words])
