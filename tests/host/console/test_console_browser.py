"""The console in a real browser (headless chromium + Playwright) against a running platform
with fake devices upgrading: sign in, upload, create a task, add devices, start it, watch the
progress bars move without a reload, cancel a device, see the outcome."""

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

    # create a task; the page moves to it
    page.get_by_role("link", name="Tasks", exact=True).click()
    expect(page.get_by_label("Package")).to_contain_text("2.0.0")
    page.get_by_label("Task name").fill("Meters to 2.0.0")
    page.get_by_role("button", name="Create task").click()
    expect(page.get_by_role("heading", name="Meters to 2.0.0")).to_be_visible()
    page.evaluate("window.__sameDocument = true")  # gone if anything reloads the page

    page.get_by_label("Device ids").fill("meter-1, meter-2")
    page.get_by_role("button", name="Add devices").click()
    expect(page.get_by_text("2 added")).to_be_visible()
    expect(page.locator("tr[data-device]")).to_have_count(2)

    page.get_by_role("button", name="Start").click()
    expect(page.locator(".task-state")).to_contain_text("running")
    notices = {d.id: d.wait_notice(20) for d in devices}
    first, second = devices
    sub = {d.id: notices[d.id]["taskId"] for d in devices}  # the spec's taskId: a sub-task's
    task_id = int(page.evaluate("location.hash").rsplit("/", 1)[1])

    # meter-1 downloads and reports: its bar follows, live
    status, body, _ = http_get(first.download_url(notices[first.id]))
    assert status == 200 and body == firmware.read_bytes()
    first.progress(sub[first.id], 10, "downloading")
    expect(_progress(page, first.id)).to_have_attribute("value", "10", timeout=20_000)
    first.progress(sub[first.id], 60, "writing")
    expect(_progress(page, first.id)).to_have_attribute("value", "60", timeout=20_000)
    expect(page.locator(f'tr[data-device="{first.id}"]')).to_contain_text("writing")
    assert http_get(second.download_url(notices[second.id]))[0] == 200
    second.progress(sub[second.id], 30, "downloading")
    expect(_progress(page, second.id)).to_have_attribute("value", "30", timeout=20_000)
    page.screenshot(path=str(tmp_path / "task-running.png"), full_page=True)

    # meter-1 finishes; meter-2 is cancelled from its row
    first.progress(sub[first.id], 100, "rebooting")
    first.version = "2.0.0"
    first.inform(sub[first.id])
    expect(page.locator(f'tr[data-device="{first.id}"]')).to_contain_text("succeeded",
                                                                          timeout=20_000)
    page.get_by_role("button", name=f"Cancel {second.id}").click()
    expect(page.locator(f'tr[data-device="{second.id}"]')).to_contain_text("cancelled",
                                                                           timeout=20_000)
    expect(page.locator(".task-state")).to_contain_text("finished", timeout=20_000)
    assert page.evaluate("window.__sameDocument") is True
    outcome = page.get_by_role("img", name="Outcomes: succeeded 1, cancelled 1")
    expect(outcome).to_have_count(1)
    shot = tmp_path / "task-finished.png"
    page.screenshot(path=str(shot), full_page=True)
    if os.environ.get("FOTA_CONSOLE_DOCS_SHOT"):  # refresh docs/console.png on purpose only
        shutil.copy(shot, DOCS_SHOT)

    # the API agrees with the page
    api = platform.api
    task = wait_for(lambda: (t := api.get_task(task_id)) and t["state"] == "finished" and t,
                    30, what="task finished")
    states = {d["device"]: d["state"] for d in task["devices"]}
    assert states == {first.id: "succeeded", second.id: "cancelled"}

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
        assert page.evaluate("document.activeElement.id") == page.get_by_label("Package") \
            .get_attribute("id")
    finally:
        context.close()
