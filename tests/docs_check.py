"""The docs' command blocks, run as written (`make docs-check`, #13).

Every fenced block of README.md and docs/*.md names its language. A shell block
(```sh, ```bash, ```shell, ```console) carries one of these markers on the line just
before its fence, or the check fails, naming the page and line:

    <!-- docs-check -->                    run as written, in page order
    <!-- docs-check: background -->        a service the following blocks use (a second
                                           terminal): started in the background, must
                                           still be running when the page ends, then stopped
    <!-- docs-check: skip (WHY) -->        not run; WHY says what it needs (a board on
                                           /dev/ttyUSB0, a download, ...)

Other languages (```text for output and synopses, ```json, ```ini, ```python ...) are not
run. A page's blocks run in one bash script (`set -euo pipefail`), in a fresh folder laid
out like a clone after `make setup` (the checkout's files linked in) with `.venv/bin` NOT on
the PATH: a page must say how `fota` gets there. A command a block sends to the background
(`fota platform serve ... &`) must still be running when the page ends or have ended with
status 0 (a service that was refused fails the page; one the page stops itself with
SIGTERM/SIGINT is fine); a background block must still be running. Everything is stopped
at the end.

    python tests/docs_check.py              the marker rule over every page (exit 1 on a problem)
    python tests/docs_check.py --list       every shell block: run, background or skip (why)
    python tests/docs_check.py --run [PAGE] run the pages' blocks, with each block's time
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHELL = ("sh", "bash", "shell", "console")
RUN, BACKGROUND, SKIP = "run", "background", "skip"
MARK = re.compile(r"^<!--\s*docs-check(?::\s*(\S.*?))?\s*-->$")
SKIP_WHY = re.compile(r"^skip \((\S.*)\)$")
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([^`\s]*)")
PAGE_TIMEOUT = 400.0   # a loaded machine; about 100 s alone on 2 cores


def pages(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


@dataclass
class Block:
    page: Path
    line: int            # the fence's line (1-based)
    lang: str
    mode: str | None     # RUN, BACKGROUND, SKIP, or None (no marker)
    why: str
    text: str

    @property
    def where(self) -> str:
        return f"{self.page.name}:{self.line}"


def _marker(text: str) -> tuple[str, str] | None:
    """(mode, why) of a marker line; ("", "") for a malformed one; None for other lines."""
    mark = MARK.match(text.strip())
    if not mark:
        return None
    arg = mark.group(1)
    if arg is None:
        return RUN, ""
    if arg == BACKGROUND:
        return BACKGROUND, ""
    skip = SKIP_WHY.match(arg)
    return (SKIP, skip.group(1)) if skip else ("", "")


def _name(page: Path) -> str:
    try:
        return str(page.resolve().relative_to(ROOT))
    except ValueError:
        return str(page)


def parse(page: Path) -> tuple[list[Block], list[str]]:
    """The page's fenced blocks, and what breaks the marker rule ("PATH:LINE: ...")."""
    lines = page.read_text().splitlines()
    name = _name(page)
    blocks: list[Block] = []
    problems: list[str] = []
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        mark = _marker(lines[i])
        if mark is not None:
            if mark[0] == "":
                problems.append(f"{name}:{i + 1}: unknown docs-check marker "
                                f"{lines[i].strip()!r}: use <!-- docs-check -->, "
                                "<!-- docs-check: background --> or "
                                "<!-- docs-check: skip (why it cannot run in CI) -->")
            nxt = FENCE.match(lines[i + 1]) if i + 1 < len(lines) else None
            if not nxt or nxt.group(3).lower() not in SHELL:
                problems.append(f"{name}:{i + 1}: a docs-check marker must be on the line "
                                "just before a ```sh fence")
            i += 1
            continue
        if not fence:
            i += 1
            continue
        indent, ticks, lang = fence.group(1), fence.group(2), fence.group(3).lower()
        end = i + 1
        while end < len(lines) and not (lines[end].strip().startswith(ticks)
                                        and not lines[end].strip().strip(ticks[0])):
            end += 1
        body = [x[len(indent):] if x.startswith(indent) else x.lstrip()
                for x in lines[i + 1:end]]
        mark = _marker(lines[i - 1]) if i else None
        mode, why = (mark[0] or None, mark[1]) if mark and lang in SHELL else (None, "")
        if not lang:
            problems.append(f"{name}:{i + 1}: fenced block without a language: ```sh (with a "
                            "docs-check marker) for commands, ```text for output or a synopsis")
        elif lang in SHELL and mark is None:
            problems.append(f"{name}:{i + 1}: ```{lang} block without a docs-check marker: "
                            "<!-- docs-check -->, <!-- docs-check: background --> or "
                            "<!-- docs-check: skip (why it cannot run in CI) --> goes on the "
                            "line before it")
        blocks.append(Block(page, i + 1, lang, mode, why, "\n".join(body)))
        i = end + 1
    return blocks, problems


def problems(paths: list[Path]) -> list[str]:
    return [p for path in paths for p in parse(path)[1]]


def shell_blocks(page: Path) -> list[Block]:
    return [b for b in parse(page)[0] if b.lang in SHELL]


# The page's script. A DEBUG trap notes every command sent to the background ($! changes
# before the next simple command); at the end each must still be running, or have ended
# with status 0 (or been stopped by SIGINT/SIGTERM, as a page may stop its service). A
# background block must still be running.
_PROLOGUE = r"""set -euo pipefail
docs_pids=(); docs_cmds=(); docs_strict=(); docs_last=''; docs_prev=''; docs_block=''
docs_t0=${EPOCHREALTIME:-$SECONDS}
docs_stop() { trap - DEBUG; kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; }
trap docs_stop EXIT
trap 'if [[ "${!:-}" != "$docs_last" ]]; then
  docs_last=${!}; docs_pids+=("$docs_last"); docs_cmds+=("$docs_block: $docs_prev")
  docs_strict+=(0)
fi; docs_prev=$BASH_COMMAND' DEBUG
docs_mark() {
  echo "### $1 $(( ${EPOCHREALTIME/./} / 1000 - ${docs_t0/./} / 1000 )) ms" >&2; docs_block=$1
}
"""
_EPILOGUE = r"""docs_mark end
trap - DEBUG
docs_dead=0
for i in "${!docs_pids[@]}"; do
  if ! kill -0 "${docs_pids[i]}" 2>/dev/null; then
    docs_st=0; wait "${docs_pids[i]}" 2>/dev/null || docs_st=$?
    case "${docs_strict[i]}:$docs_st" in 0:0|0:130|0:143) continue;; esac
    echo "### stopped before the page ended (exit $docs_st): ${docs_cmds[i]}" >&2
    docs_dead=1
  fi
done
exit $docs_dead
"""


def script(page: Path) -> str:
    parts = [_PROLOGUE]
    for block in shell_blocks(page):
        if block.mode == RUN:
            parts += [f"docs_mark {block.where}", block.text]
        elif block.mode == BACKGROUND:
            parts += [f"docs_mark {block.where}", "(", block.text, ") &",
                      f'docs_pids+=("$!"); docs_cmds+=("{block.where} (background block)")',
                      "docs_strict+=(1); docs_last=$!"]
    parts.append(_EPILOGUE)
    return "\n".join(parts)


def checkout(work: Path) -> Path:
    """A folder that looks like the repository after `make setup`."""
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


def clean_env() -> dict[str, str]:
    venv_bin = (ROOT / ".venv" / "bin").resolve()
    path = [p for p in os.environ.get("PATH", "").split(":")
            if p and Path(p).resolve() != venv_bin]
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    return {**env, "PATH": ":".join(path), "COLUMNS": "80"}


_MARKS = re.compile(r"### (\S+) (\d+) ms$", re.M)


@dataclass
class Outcome:
    code: int | None     # None: timed out
    output: str
    seconds: float
    cpu_seconds: float   # the page's processes that were waited for (roughly all of them)

    @property
    def where(self) -> str:
        marks = _MARKS.findall(self.output)
        return marks[-1][0] if marks else "(start)"

    def timings(self) -> list[tuple[str, float]]:
        """(block, seconds) for each block that ran."""
        marks = _MARKS.findall(self.output)
        return [(a[0], (int(b[1]) - int(a[1])) / 1000)
                for a, b in zip(marks, marks[1:], strict=False)]


# A port a page's commands name as written (`--http-port 8080`, `127.0.0.1:1883`); 0 is
# "any free port" and is left out.
_FIXED_PORT = re.compile(r"(?:--(?:http-|mqtt-|broker-)?port[ =]|(?:127\.0\.0\.1|localhost):)"
                         r"([1-9][0-9]{1,4})\b")


def fixed_ports(page: Path) -> list[int]:
    """The ports the page's run and background blocks name, sorted."""
    return sorted({int(m.group(1)) for b in shell_blocks(page) if b.mode in (RUN, BACKGROUND)
                   for m in _FIXED_PORT.finditer(b.text)})


@contextlib.contextmanager
def holding_ports(ports: list[int], timeout: float) -> Iterator[None]:
    """Take a machine-wide lock per port (in order, so two takers never deadlock) for as
    long as a page runs. A page runs as written, so it names fixed ports (8080): two pages,
    or two checkouts testing on one machine, would otherwise start services on the same
    port at once and one would fail with "Address already in use". After `timeout` the page
    runs anyway, and a port held by something else still fails it, naming the port."""
    held = []
    deadline = time.monotonic() + timeout
    try:
        for port in ports:
            lock = open(Path(tempfile.gettempdir()) / f"fota-docs-check-port-{port}.lock", "a")
            held.append(lock)
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.2)
        yield
    finally:
        for lock in held:
            lock.close()          # releases the flock


def run_page(page: Path, work: Path, timeout: float = PAGE_TIMEOUT) -> Outcome:
    """Run the page's blocks in a fresh checkout at `work` (which must not exist), holding
    the ports it names (`holding_ports`)."""
    with holding_ports(fixed_ports(page), timeout):
        return _run_page(page, work, timeout)


def _run_page(page: Path, work: Path, timeout: float) -> Outcome:
    clone = checkout(work)
    log = work.parent / f"{work.name}-output.txt"
    start, cpu = time.monotonic(), _children_cpu()
    with open(log, "w") as out:
        proc = subprocess.Popen(["bash", "-c", script(page)], cwd=clone, env=clean_env(),
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code: int | None = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            try:                         # whatever the page left running
                os.killpg(proc.pid, signal.SIGKILL if code is None else signal.SIGTERM)
            except ProcessLookupError:
                pass
            proc.wait(30)
    return Outcome(code, log.read_text(errors="replace"), time.monotonic() - start,
                   _children_cpu() - cpu)


def _children_cpu() -> float:
    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    return use.ru_utime + use.ru_stime


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pages", nargs="*", type=Path, help="default: README.md and docs/*.md")
    ap.add_argument("--list", action="store_true", help="list every shell block's marker")
    ap.add_argument("--run", action="store_true", help="run the pages' blocks")
    args = ap.parse_args(argv)
    paths = args.pages or pages()
    found = problems(paths)
    for p in found:
        print(p, file=sys.stderr)
    if args.list:
        for path in paths:
            for b in shell_blocks(path):
                print(f"{b.where}\t{b.mode or 'UNMARKED'}\t{b.why}")
    if found:
        return 1
    if args.run:
        with tempfile.TemporaryDirectory(prefix="docs-check-") as tmp:
            failed = 0
            for path in paths:
                if not any(b.mode in (RUN, BACKGROUND) for b in shell_blocks(path)):
                    continue
                out = run_page(path, Path(tmp) / path.stem)
                for where, s in out.timings():
                    print(f"  {where:<24} {s:7.1f} s")
                ok = out.code == 0
                print(f"{path.name}: {'ok' if ok else 'FAILED at ' + out.where} "
                      f"({out.seconds:.1f} s, CPU {out.cpu_seconds:.1f} s)")
                if not ok:
                    failed = 1
                    print(out.output[-4000:], file=sys.stderr)
            return failed
    return 0


if __name__ == "__main__":
    sys.exit(main())
