"""Which boards the engine and agent suites run on (issue #18: "each new board runs the
engine and agent suites in simulation").

Every board of host_tools/fota_host/boards/chips.py (esp32, esp32s3, esp32c3, esp32c6,
pico_w, pico2_w) runs every test of tests/firmware/engine and tests/firmware/agent that
depends on the board. A test asks for its boards with one of these fixtures:

- `esp32_board`: each ESP32-family board (esp32, esp32s3, esp32c3, esp32c6);
- `pico_board`: each Pico board (pico_w, pico2_w);
- `any_board`: all six.

What differs between boards, and so runs per board: the chip id an image must carry
(the first-block check), the slot layout and partition table (ota_0/ota_1 of the board's
usual flash: 0x180000 on 4 MiB, 0x270000 on the S3's 8 MiB; a factory-only table; the
Pico's slot folders), the flash geometry the resume journal and its checkpoints are
written against, the trial and rollback records (otadata states, fota_trial.json,
fota_boot.json), the sizes that must fit (an image one byte over the board's slot), the
heap an update needs on it, and the board's watchdog limit (8.388 s RP2040, 16.777 s
RP2350).

What does not differ, and so runs once (on esp32, or on pico_w where the test needs a
file slot): the code path is the same module with the same inputs on every board, the
simulated board only changes `sys.platform`, the flash folder and the watchdog limit,
none of which these tests reach:
- the HTTP client: status codes, short bodies, wrong Content-Length, connection refused,
  idle and overall deadlines, a local file source (test_engine_esp32's download failures,
  test_agent_field's dribbling/silent servers, test_agent's 404);
- TLS for MQTT and HTTPS (test_engine_tls.py, test_agent_tls.py);
- the MQTT link and the CTWing protocol: inform shape, hostile notices, duplicate and
  busy tasks, broker restart, half-open link, empty prefix, url_as_is, task ids in the
  log, UTF-8 and Chinese desc text, a bad config, a broken agent (test_agent.py,
  test_agent_field.py);
- the application's reboot deferral (test_agent_reboot_defer.py) and the watchdog being
  fed during a slow download (the feed is by time; the limit is per board, above);
- the download's resume protocol (Range refused by the server) and the idle heap after
  failed updates (test_agent_memory.py, which probes the agent's own heap).
Bundle packing checks (not a bundle, a path escape) run on each Pico board: they are
cheap and the slot folders are the Pico's layout.

Cost (measured on the 2-core machine, see docs/boards.md "Boards in the test suite"):
the per-board runs add about three minutes to `make test`.
"""

from __future__ import annotations

import pytest
from fota_host.boards import chips

ESP32_BOARDS = [b.name for b in chips.BOARDS.values() if b.family == "esp32"]
PICO_BOARDS = [b.name for b in chips.BOARDS.values() if b.family == "pico_w"]
ALL_BOARDS = list(chips.BOARDS)


@pytest.fixture(params=ESP32_BOARDS)
def esp32_board(request) -> str:
    return request.param


@pytest.fixture(params=PICO_BOARDS)
def pico_board(request) -> str:
    return request.param


@pytest.fixture(params=ALL_BOARDS)
def any_board(request) -> str:
    return request.param

