"""`make docs-check`: the README's and the docs' commands run as written (#13).

The rules and the runner are in tests/docs_check.py: every shell block of README.md and
docs/*.md is marked to run, to run in the background, or to be skipped with the reason;
a page's runnable blocks run in order, in a fresh folder laid out like a clone after
`make setup`, with `.venv/bin` not on the PATH. Every relative link must name a file.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import docs_check
import pytest
from docs_check import BACKGROUND, RUN, SKIP

ROOT = docs_check.ROOT
PAGES = docs_check.pages()
CHECKER = Path(docs_check.__file__)


@pytest.fixture(scope="module")
def set_up() -> None:
    """`make setup` in the checkout itself first, so nothing is left for the folder's."""
    proc = subprocess.run(["make", "-C", str(ROOT), "setup"], capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr


def runnable(page: Path) -> bool:
    return any(b.mode in (RUN, BACKGROUND) for b in docs_check.shell_blocks(page))


def test_every_shell_block_is_marked_to_run_or_skipped_with_a_reason() -> None:
    assert docs_check.problems(PAGES) == []


RUNNABLE = [p for p in PAGES if runnable(p)]
RUN_TEST = "test_the_commands_of_a_page_run_as_written"


@pytest.fixture(scope="module")
def page_runs(set_up: None, tmp_path_factory: pytest.TempPathFactory,
              request: pytest.FixtureRequest
              ) -> Iterator[dict[Path, Future[docs_check.Outcome]]]:
    """The selected pages at once, each in its own clone: most of a page's time is spent
    waiting (for a service to be ready, a fleet's `--for`), so together they take about as
    long as the longest page."""
    selected = [item.callspec.params["page"] for item in request.session.items
                if getattr(item, "originalname", "") == RUN_TEST and hasattr(item, "callspec")]
    tmp = tmp_path_factory.mktemp("docs")
    with ThreadPoolExecutor(max(1, len(selected))) as pool:
        yield {page: pool.submit(docs_check.run_page, page, tmp / page.stem)
               for page in selected}


@pytest.mark.timeout(docs_check.PAGE_TIMEOUT + 120)
@pytest.mark.parametrize("page", RUNNABLE, ids=lambda p: p.name)
def test_the_commands_of_a_page_run_as_written(
        page: Path, page_runs: dict[Path, Future[docs_check.Outcome]]) -> None:
    if "jq" in docs_check.script(page) and not shutil.which("jq"):
        pytest.fail("the docs use jq: apt-get install jq (.ci/run installs it)")
    out = page_runs[page].result()
    stopped = re.findall(r"### stopped before.*", out.output)
    assert out.code == 0, (f"{out.where}: {'timed out' if out.code is None else f'exit {out.code}'}"
                           f"\n{chr(10).join(stopped)}\n{out.output[-4000:]}")


def write_page(tmp_path: Path, text: str) -> Path:
    page = tmp_path / "guide.md"
    page.write_text(text)
    return page


def check(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(CHECKER), *map(str, args)],
                          capture_output=True, text=True, timeout=60)


def test_an_unmarked_shell_block_fails_the_check_naming_its_file_and_line(
        tmp_path: Path) -> None:
    page = write_page(tmp_path, "# Guide\n\n<!-- docs-check -->\n```sh\necho checked\n```\n\n"
                                "Then:\n\n```sh\nfota platform serve --data x\n```\n")
    proc = check(page)
    assert proc.returncode == 1
    assert f"{page}:10: ```sh block without a docs-check marker" in proc.stderr
    assert f"{page}:4" not in proc.stderr          # the marked block is fine


def test_skipped_blocks_need_a_reason_and_output_blocks_a_language(tmp_path: Path) -> None:
    page = write_page(tmp_path, "<!-- docs-check: skip (needs a board on /dev/ttyUSB0) -->\n"
                                "```bash\nmake deploy PORT=/dev/ttyUSB0\n```\n"
                                "```text\nfota: sample output\n```\n")
    assert check(page).returncode == 0
    assert [(b.mode, b.why) for b in docs_check.shell_blocks(page)] == [
        (SKIP, "needs a board on /dev/ttyUSB0")]

    bad = write_page(tmp_path, "<!-- docs-check: skip -->\n```sh\nmake flash\n```\n\n"
                               "```\nfota task start 1\n```\n"
                               "<!-- docs-check -->\n\n```sh\necho x\n```\n")
    proc = check(bad)
    assert proc.returncode == 1
    assert f"{bad}:1: unknown docs-check marker" in proc.stderr
    assert f"{bad}:6: fenced block without a language" in proc.stderr
    assert f"{bad}:9: a docs-check marker must be on the line just before" in proc.stderr
    assert f"{bad}:11: ```sh block without a docs-check marker" in proc.stderr


def test_a_background_service_that_stops_early_fails_the_page(tmp_path: Path) -> None:
    page = write_page(tmp_path, "<!-- docs-check -->\n```sh\n"
                                "sh -c 'echo refused >&2; exit 2' &   # a service\n"
                                "sleep 1\n```\n"
                                "<!-- docs-check: background -->\n```sh\nsleep 60\n```\n"
                                "<!-- docs-check: background -->\n```sh\ntrue\n```\n"
                                "<!-- docs-check -->\n```sh\nsleep 1\n```\n")
    out = docs_check.run_page(page, tmp_path / "clone", timeout=60)
    assert out.code == 1
    assert "### stopped before the page ended (exit 2): guide.md:2: sh -c" in out.output
    assert "(exit 0): guide.md:11 (background block)" in out.output
    assert "guide.md:7 (background block)" not in out.output   # `sleep 60` still ran

    fine = write_page(tmp_path, "<!-- docs-check -->\n```sh\nsleep 60 &\n"
                                "sh -c 'exit 0' &\nsleep 30 &\nkill $!\n```\n"
                                "<!-- docs-check -->\n```sh\nsleep 1\n```\n")
    assert docs_check.run_page(fine, tmp_path / "clone2", timeout=60).code == 0


def test_pages_naming_the_same_port_take_turns(tmp_path: Path) -> None:
    """Pages run as written name fixed ports (8080): two pages, or two checkouts tested on
    one machine at once, must not start services on the same port together (CI once failed
    with "Address already in use" for `fota platform serve --http-port 8080`)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # binds the page's port for a while, as a service would (no SO_REUSEADDR: a second
    # bind fails at once)
    serve = (f"python3 -c 'import socket, time; s = socket.socket(); "
             f"s.bind((\"127.0.0.1\", {port})); time.sleep(2)'   # 127.0.0.1:{port}\n")
    pages = []
    for n in range(2):
        (tmp_path / str(n)).mkdir()
        pages.append(write_page(tmp_path / str(n), f"<!-- docs-check -->\n```sh\n{serve}```\n"))
    assert docs_check.fixed_ports(pages[0]) == [port]
    with ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(docs_check.run_page, page, tmp_path / f"clone{n}", 120)
                for n, page in enumerate(pages)]
        outcomes = [run.result() for run in runs]
    assert [o.code for o in outcomes] == [0, 0], [o.output for o in outcomes]


def test_every_page_has_checked_commands() -> None:
    for name in ("README.md", "platform.md", "fleet.md", "boards.md"):
        page = ROOT / name if name == "README.md" else ROOT / "docs" / name
        assert runnable(page), f"{name} has no <!-- docs-check --> block"


def test_relative_links_name_files_that_exist() -> None:
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (page.parent / target).resolve().exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert broken == []
