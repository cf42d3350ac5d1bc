# ESP32 entry: the OTA agent, polled beside the user's application.
# The application is an optional module `app` on the filesystem with, all optional:
#   step()     called every loop turn (keep it short: the agent polls in between)
#   healthy()  True when the app works; a new firmware is confirmed only then
# A broken app does not stop the agent, so the board can still be updated remotely;
# it also never passes the health check, so a new firmware that breaks it rolls back.
from fota import board

agent, step = board.start_app("")
del board  # start-up code only: start() unloaded it, this frees its RAM for the loop
from fota.agent import loop  # noqa: E402

loop(agent, step)
