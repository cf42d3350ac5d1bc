# Pico W entry: the launcher. RP2040 cannot switch firmware slots, so the application
# lives in A/B folders (slots/a, slots/b) that OTA updates; fota.fileslot.launch()
# picks the active one and counts unconfirmed boots (falls back after max_trials).
# The application is a module `app` in the slot with, all optional:
#   step()     called every loop turn (keep it short: the agent polls in between)
#   healthy()  True when the app works; a new slot is confirmed only then
# A broken app does not stop the agent, so the board can still be fixed remotely.
import sys

from fota.fileslot import launch


def _trials():
    try:
        import json

        with open("fota_config.json") as f:
            return int(json.load(f).get("max_trials", 3))
    except Exception:  # noqa: BLE001 - board.start() reports a bad config clearly
        return 3


slot = launch("", _trials())  # "slots/a" or "slots/b", relative to / at boot
sys.path.insert(0, slot)

from fota import board  # noqa: E402

agent, step = board.start_app(slot)
del board  # start-up code only: start() unloaded it, this frees its RAM for the loop
from fota.agent import loop  # noqa: E402

loop(agent, step)
