"""`make docs-check`: the README's and the docs' commands run as written (#13).

A shell block marked with the line `<!-- docs-check -->` just before its ```sh fence is run
by bash (`set -euo pipefail`), every marked block of one page in order in one script, in a
fresh folder laid out like a clone after `make setup` (the checkout's files linked in, so
`make demo` and `.venv/bin/fota` work there) with `.venv/bin` NOT on the PATH: a page must
say how `fota` gets there. Background jobs (`fota platform serve ... &`) are stopped at the
end. Every relative link of every page must name a file that exists.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from fota_host import paths

ROOT = paths.repo_root()
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARK = "<!-- docs-check -->"
FENCE = re.compile(r"^```(\w*)\s*$")


def marked_blocks(page: Path) -> list[tuple[int, str]]:
    """(line number, text) of each marked shell block."""
    lines = page.read_text().splitlines()
    blocks = []
    for i, line in enumerate(lines):
        if line.strip() != MARK:
            continue
        fence = FENCE.match(lines[i + 1]) if i + 1 < len(lines) else None
        assert fence and fence.group(1) in ("sh", "bash"), \
            f"{page.name}:{i + 1}: {MARK} must be followed by a ```sh block"
        end = next(j for j in range(i + 2, len(lines)) if lines[j].startswith("```"))
        blocks.append((i + 3, "\n".join(lines[i + 2:end])))
    return blocks


def checkout(tmp_path: Path) -> Path:
    """A folder that looks like the repository after `make setup`."""
    work = tmp_path / "clone"
    work.mkdir()
    for entry in ROOT.iterdir():
        if entry.name not in (".git", ".venv"):
            (work / entry.name).symlink_to(entry)
    # .venv: the checkout's, entry by entry, with its own fresh `make setup` stamp, so a
    # `make` here never reinstalls into the shared venv (pip would write this folder's
    # path into its scripts)
    venv = work / ".venv"
    venv.mkdir()
    for entry in (ROOT / ".venv").iterdir():
        if entry.name != ".installed":
            (venv / entry.name).symlink_to(entry)
    (venv / ".installed").touch()
    return work


def script(page: Path) -> str:
    parts = ["set -euo pipefail",
             "trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true' EXIT"]
    for line, block in marked_blocks(page):
        parts.append(f"echo '### {page.name}:{line}' >&2")
        parts.append(block)
    return "\n".join(parts) + "\n"


def clean_env() -> dict[str, str]:
    venv_bin = str(ROOT / ".venv" / "bin")
    path = [p for p in os.environ.get("PATH", "").split(":")
            if p and Path(p).resolve() != Path(venv_bin).resolve()]
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "MAKEFLAGS", "MAKELEVEL")}
    return {**env, "PATH": ":".join(path), "COLUMNS": "80"}


@pytest.fixture(scope="module", autouse=True)
def set_up() -> None:
    """`make setup` in the checkout itself first, so nothing is left for the folder's."""
    proc = subprocess.run(["make", "-C", str(ROOT), "setup"], capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("page", [p for p in PAGES if marked_blocks(p)], ids=lambda p: p.name)
def test_the_commands_of_a_page_run_as_written(page: Path, tmp_path: Path) -> None:
    if "jq" in script(page) and not shutil.which("jq"):
        pytest.fail("the docs use jq: apt-get install jq (.ci/run installs it)")
    work = checkout(tmp_path)
    log = tmp_path / "output.txt"
    with open(log, "w") as out:
        proc = subprocess.Popen(["bash", "-c", script(page)], cwd=work, env=clean_env(),
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = proc.wait(240)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            try:                         # whatever the page left running
                os.killpg(proc.pid, signal.SIGKILL if code is None else signal.SIGTERM)
            except ProcessLookupError:
                pass
            proc.wait(30)
    text = log.read_text()
    where = [x for x in text.splitlines() if x.startswith("### ")]
    assert code == 0, (f"{where[-1] if where else page.name}: "
                       f"{'timed out' if code is None else f'exit {code}'}\n{text[-4000:]}")


def test_every_page_has_checked_commands() -> None:
    for name in ("README.md", "platform.md", "fleet.md", "boards.md"):
        page = ROOT / name if name == "README.md" else ROOT / "docs" / name
        assert marked_blocks(page), f"{name} has no {MARK} block"


def test_relative_links_name_files_that_exist() -> None:
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (page.parent / target).resolve().exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert broken == []
