# ESP32 entry: the OTA agent, polled beside the user's application.
# The application is an optional module `app` on the filesystem with, all optional:
#   step()     called every loop turn (keep it short: the agent polls in between)
#   healthy()  True when the app works; a new firmware is confirmed only then
# A broken app does not stop the agent, so the board can still be updated remotely;
# it also never passes the health check, so a new firmware that breaks it rolls back.
import os
import sys

health = None
app = None
for name in ("app.mpy", "app.py", "app"):
    try:
        os.stat(name)
    except OSError:
        continue
    try:
        import app  # pyright: ignore[reportMissingImports] - the user's module
    except Exception as e:  # noqa: a broken app must not take the agent down
        sys.print_exception(e)
        health = lambda: False  # noqa: E731 - never confirm firmware that breaks the app
    else:
        health = getattr(app, "healthy", None)
    break
step = getattr(app, "step", None)


def _step():
    global step
    if step:
        try:
            step()
        except Exception as e:  # noqa: stop calling a failing app; keep the agent
            sys.print_exception(e)
            step = None


from fota import board  # noqa: E402

board.run(health=health, app_step=_step if step else None)
