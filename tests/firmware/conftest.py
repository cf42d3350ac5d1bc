"""Which boards the engine and agent suites run on (issue #18: "each new board runs the
engine and agent suites in simulation").

Every board of host_tools/fota_host/boards/chips.py (esp32, esp32s3, esp32c3, esp32c6,
pico_w, pico2_w) runs every test of tests/firmware/engine and tests/firmware/agent that
depends on the board. A test asks for its boards with one of these fixtures:

- `esp32_board`: each ESP32-family board (esp32, esp32s3, esp32c3, esp32c6);
- `pico_board`: each Pico board (pico_w, pico2_w);
- `any_board`: all six.

Board-dependent, so run per board: what the simulated board changes. Its flash folder
carries the board (`model`): the chip id of the image it ships with, which the device's
first-block check compares an update against; the slot layout and partition table
(ota_0/ota_1 of the board's usual flash: 0x180000 on 4 MiB, 0x270000 on the S3's 8 MiB;
a factory-only table; the Pico's slot folders); the flash geometry the resume journal and
its checkpoints are written against and what a power cut leaves there; the trial and
rollback records (otadata states, fota_trial.json, fota_boot.json); the sizes that must
fit (an image one line over the board's slot, a filesystem holding both slots); the heap
an update needs on it; and its `machine.WDT` limit (8.388 s RP2040, 16.777 s RP2350).

Board-independent, so run once (on esp32, or pico_w where a test needs file slots): the
tests in BOARD_INDEPENDENT below, each with the reason. They reach none of the above: the
HTTP client, TLS, the MQTT link and the CTWing protocol, config checks, the application's
reboot deferral and the agent's idle heap are the same modules with the same inputs on
every board (the simulated board changes only `sys.platform`, the flash folder and the
watchdog limit). tests/host/boards/test_board_suites.py holds this to account: every test
of the two suites is either parametrized over a whole family of boards or named here.

Cost (the growth of `make test`, measured on the 2-core machine): see docs/boards.md,
"Boards in the test suite".
"""

from __future__ import annotations

import pytest
from fota_host.boards import chips

ESP32_BOARDS = [b.name for b in chips.BOARDS.values() if b.family == "esp32"]
PICO_BOARDS = [b.name for b in chips.BOARDS.values() if b.family == "pico_w"]
ALL_BOARDS = list(chips.BOARDS)

_HTTP = "the HTTP client (status, length, range, deadlines): the same on every board"
_LINK = "the MQTT link and the CTWing protocol: the same on every board"
# "file.py::test" (or "file.py::*" for a whole file) -> why it runs on one board only.
BOARD_INDEPENDENT: dict[str, str] = {
    "engine/test_engine_esp32.py::test_download_failures_report_step_and_keep_boot": _HTTP,
    "engine/test_engine_esp32.py::test_connection_refused_is_a_download_failure": _HTTP,
    "engine/test_engine_esp32.py::test_resume_refused_by_server_starts_over_and_succeeds":
        _HTTP + " (a Range the server ignores or answers wrongly)",
    "engine/test_engine_esp32.py::test_local_file_source": "the source reader, not the slot",
    "engine/test_engine_tls.py::*": "TLS for HTTPS images: the same client on every board",
    "agent/test_agent.py::test_first_inform_once_with_the_spec_shape": _LINK,
    "agent/test_agent.py::test_hostile_notices_are_dropped_and_the_device_keeps_working":
        _LINK + " (notice parsing)",
    "agent/test_agent.py::test_download_failure_is_step_minus_2": _HTTP,
    "agent/test_agent.py::test_broker_restart_mid_download_finishes_and_reports": _LINK,
    "agent/test_agent.py::test_half_open_link_is_detected_and_recovered": _LINK,
    "agent/test_agent.py::test_same_task_is_ignored_and_another_is_refused_busy": _LINK,
    "agent/test_agent.py::test_bad_config_is_a_clear_error_not_a_crash_loop":
        "config validation: fota.config, before any slot",
    "agent/test_agent.py::test_empty_prefix_uses_ctwing_literal_topics": _LINK,
    "agent/test_agent.py::test_url_as_is_fetches_the_notice_url_unchanged":
        _LINK + " (the notice's URL)",
    "agent/test_agent_field.py::test_non_ascii_version_and_chinese_desc_arrive_intact":
        _LINK + " (UTF-8 and desc_lang text)",
    "agent/test_agent_field.py::test_slow_download_feeds_the_watchdog_and_keeps_mqtt":
        "the watchdog is fed by time (4 s, within every board's limit; the limits run "
        "per board)",
    "agent/test_agent_field.py::test_a_dribbling_server_ends_in_minus_2_at_the_overall_deadline":
        _HTTP,
    "agent/test_agent_field.py::test_a_silent_server_ends_in_minus_2_at_the_idle_deadline":
        _HTTP,
    "agent/test_agent_field.py::test_device_log_names_the_sub_task_and_the_platform_task":
        _LINK,
    "agent/test_agent_field.py::test_a_broken_agent_never_stops_the_application":
        "the agent's error guard around a CA file that can't be read (TLS set-up)",
    "agent/test_agent_reboot_defer.py::*":
        "the application's may_reboot() and the start delay: agent logic after step 100",
    "agent/test_agent_tls.py::*": "MQTT over TLS and HTTPS: the same client on every board",
    "agent/test_agent_memory.py::*":
        "the agent's idle heap after failed updates: its own modules, loaded and released "
        "the same way on every board (an update's heap budget runs per board in the engine "
        "suite)",
    "agent/test_*heap*.py::*":
        "the agent's heap measurements (#17): the agent's own modules, the same on every "
        "board of a family",
}


@pytest.fixture(params=ESP32_BOARDS)
def esp32_board(request) -> str:
    return request.param


@pytest.fixture(params=PICO_BOARDS)
def pico_board(request) -> str:
    return request.param


@pytest.fixture(params=ALL_BOARDS)
def any_board(request) -> str:
    return request.param
