"""The console in a real browser (headless chromium + Playwright) against a running platform
with fake devices upgrading: sign in, upload, create a task in two waves, add devices, start
it, watch the progress bars move without a reload, pause and resume, cancel a device, see the
outcome by wave."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from conftest import sign_in
from platform_fakes import FakeDevice, http_get, wait_for
from playwright.sync_api import expect

DOCS_SHOT = Path(__file__).parents[3] / "docs" / "console.png"


def test_wrong_token_is_refused_and_shows_nothing(platform: Any, page: Any) -> None:
    info = platform.proc.info
    sign_in(page, info, token="not-the-token")
    expect(page.get_by_role("alert")).to_have_text("Wrong admin token.")
    expect(page.get_by_role("navigation")).to_have_count(0)
    cookies = page.context.cookies()
    assert not [c for c in cookies if c["name"] == "fota_console"]
    # the console's own pages stay closed too
    page.goto(info["api"] + "/console#/tasks")
    expect(page.get_by_label("Admin token")).to_be_visible()


def test_rollout_through_the_console(platform: Any, page: Any, tmp_path: Path) -> None:
    info = platform.proc.info
    devices = [FakeDevice(f"meter-{i}", platform.broker).start() for i in (1, 2)]
    try:
        _rollout(platform, page, info, devices, tmp_path)
    finally:
        for d in devices:
            d.stop()
    assert page.errors == []


def _progress(page: Any, device: str) -> Any:
    return page.locator(f'tr[data-device="{device}"] progress')


def _rollout(platform: Any, page: Any, info: dict[str, Any], devices: list[FakeDevice],
             tmp_path: Path) -> None:
    sign_in(page, info)
    expect(page.get_by_role("status").first).to_contain_text("Live")
    cookie = next(c for c in page.context.cookies() if c["name"] == "fota_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    # the fleet's versions are on the overview once the devices informed
    expect(page.locator(".cards")).to_contain_text("2 devices")

    # upload a package
    page.get_by_role("link", name="Packages").click()
    firmware = tmp_path / "meter-2.0.0.bin"
    firmware.write_bytes(os.urandom(40_000))
    page.get_by_label("Firmware file").set_input_files(str(firmware))
    page.get_by_label("Version", exact=True).fill("2.0.0")
    page.get_by_role("button", name="Upload package").click()
    expect(page.get_by_text("Package 2.0.0 added")).to_be_visible()
    expect(page.get_by_role("cell", name="2.0.0").first).to_be_visible()

    # create a task in two waves (a canary of one, then the rest); the page moves to it
    page.get_by_role("link", name="Tasks", exact=True).click()
    expect(page.get_by_label("Package", exact=True)).to_contain_text("2.0.0")
    page.get_by_label("Task name").fill("Meters to 2.0.0")
    page.get_by_label("Waves").fill("1, rest")
    page.get_by_role("button", name="Create task").click()
    expect(page.get_by_role("heading", name="Meters to 2.0.0")).to_be_visible()
    page.evaluate("window.__sameDocument = true")  # gone if anything reloads the page

    page.get_by_label("Device ids").fill("meter-1, meter-2")
    page.get_by_role("button", name="Add devices").click()
    expect(page.get_by_text("2 added")).to_be_visible()
    expect(page.locator("tr[data-device]")).to_have_count(2)

    page.get_by_role("button", name="Start").click()
    expect(page.locator(".task-state")).to_contain_text("running")
    expect(page.get_by_role("table", name="Waves of this task").locator("tbody tr")) \
        .to_have_count(2)
    # the canary: whichever device the first wave holds gets the only notice
    first = wait_for(lambda: next((d for d in devices if not d.notices.empty()), None), 30,
                     what="the canary's notice")
    second = next(d for d in devices if d is not first)
    notice = first.wait_notice(1)
    sub = notice["taskId"]  # the spec's taskId: the device's sub-task
    task_id = int(page.evaluate("location.hash").rsplit("/", 1)[1])

    # it downloads and reports: its bar follows, live
    status, body, _ = http_get(first.download_url(notice))
    assert status == 200 and body == firmware.read_bytes()
    first.progress(sub, 10, "downloading")
    expect(_progress(page, first.id)).to_have_attribute("value", "10", timeout=20_000)
    first.progress(sub, 60, "writing")
    expect(_progress(page, first.id)).to_have_attribute("value", "60", timeout=20_000)
    expect(page.locator(f'tr[data-device="{first.id}"]')).to_contain_text("writing")

    # pause and resume from the page
    page.get_by_role("button", name="Pause").click()
    expect(page.locator(".task-state")).to_contain_text("paused", timeout=20_000)
    page.screenshot(path=str(tmp_path / "task-paused.png"), full_page=True)
    page.get_by_role("button", name="Resume").click()
    expect(page.locator(".task-state")).to_contain_text("running", timeout=20_000)

    # the canary succeeds: the second wave opens and its device upgrades
    first.progress(sub, 100, "rebooting")
    first.version = "2.0.0"
    first.inform(sub)
    expect(page.locator(f'tr[data-device="{first.id}"]')).to_contain_text("succeeded",
                                                                          timeout=20_000)
    notice2 = second.wait_notice(30)
    assert http_get(second.download_url(notice2))[0] == 200
    second.progress(notice2["taskId"], 30, "downloading")
    expect(_progress(page, second.id)).to_have_attribute("value", "30", timeout=20_000)
    page.screenshot(path=str(tmp_path / "task-running.png"), full_page=True)

    # the second device is cancelled from its row
    page.get_by_role("button", name=f"Cancel {second.id}").click()
    expect(page.locator(f'tr[data-device="{second.id}"]')).to_contain_text("cancelled",
                                                                           timeout=20_000)
    expect(page.locator(".task-state")).to_contain_text("finished", timeout=20_000)
    assert page.evaluate("window.__sameDocument") is True
    outcome = page.get_by_role("img", name="Outcomes by wave: wave 1 succeeded 1; "
                                           "wave 2 cancelled 1")
    expect(outcome).to_have_count(1)
    shot = tmp_path / "task-finished.png"
    page.screenshot(path=str(shot), full_page=True)
    if os.environ.get("FOTA_CONSOLE_DOCS_SHOT"):  # refresh docs/console.png on purpose only
        shutil.copy(shot, DOCS_SHOT)

    # the API agrees with the page
    api = platform.api
    task = wait_for(lambda: (t := api.get_task(task_id)) and t["state"] == "finished" and t,
                    30, what="task finished")
    states = {d["device"]: (d["state"], d["wave"]) for d in task["devices"]}
    assert states == {first.id: ("succeeded", 1), second.id: ("cancelled", 2)}

    # the overview and the devices page show the fleet's new versions
    page.get_by_role("link", name="Devices").click()
    page.get_by_label("Search devices").fill("meter-1")
    expect(page.get_by_role("cell", name="2.0.0")).to_be_visible(timeout=20_000)
    page.get_by_role("button", name="meter-1").click()
    expect(page.get_by_role("heading", name="History of meter-1")).to_be_visible()
    expect(page.get_by_role("cell", name="#1 Meters to 2.0.0")).to_be_visible()


def test_phone_sized_screen(platform: Any, browser: Any) -> None:
    """A phone-wide viewport: the navigation and the sign-out stay on screen, nothing scrolls
    sideways."""
    context = browser.new_context(viewport={"width": 375, "height": 740}, is_mobile=True)
    try:
        page = context.new_page()
        sign_in(page, platform.proc.info)
        page.goto(platform.proc.info["api"] + "/console#/tasks")
        page.reload()  # a fresh load: keyboard focus at the document's start
        expect(page.get_by_role("button", name="Create task")).to_be_visible()
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 375
        expect(page.get_by_role("button", name="Sign out")).to_be_in_viewport()
        # keyboard: the first Tab reaches the skip link, Enter jumps to the page's content
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent") == "Skip to content"
        page.keyboard.press("Enter")
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.closest('main') !== null")
        package = page.get_by_label("Package", exact=True)
        assert page.evaluate("document.activeElement.id") == package.get_attribute("id")
    finally:
        context.close()
