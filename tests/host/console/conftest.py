"""The console's tests: a platform on its embedded broker, fake devices (tests/host/platform),
and Debian's chromium driven by Playwright (never `playwright install`)."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "platform"))

from platform_fakes import Env  # noqa: E402

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
CONSOLE_JS = (Path(__file__).parents[3] / "host_tools/fota_host/platform/console/static/dist"
              / "app.js")


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Env]:
    if not CONSOLE_JS.exists():
        pytest.fail("the console is not built: run `make setup` (or `make console`)")
    env = Env("embedded", tmp_path)
    env.start()
    yield env
    env.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    exe = shutil.which("chromium")
    if exe is None:
        pytest.fail("no chromium: `apt-get install -y chromium` (.ci/run does it)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(20_000)
    pg.errors = []  # uncaught script errors: a test checks none happened
    pg.on("pageerror", lambda exc: pg.errors.append(str(exc)))
    # console errors too: a Content-Security-Policy violation, a failed request
    pg.on("console", lambda msg: msg.type == "error" and pg.errors.append(msg.text))
    yield pg
    context.close()


def sign_in(page: Any, info: dict[str, Any], token: str | None = None) -> None:
    page.goto(info["api"] + "/console")
    page.get_by_label("Admin token").fill(token or info["admin_token"])
    page.get_by_role("button", name="Sign in").click()


@pytest.fixture
def firmware(tmp_path: Path) -> Path:
    path = tmp_path / "fw-2.0.0.bin"
    path.write_bytes(os.urandom(50_000))
    return path
