# ESP32 entry: the OTA agent, polled beside the user's application.
# The application is an optional module `app` on the filesystem with, all optional:
#   step()     called every loop turn (keep it short: the agent polls in between)
#   healthy()  True when the app works; a new firmware is confirmed only then
# A broken app does not stop the agent, so the board can still be updated remotely.
import sys

try:
    import app  # pyright: ignore[reportMissingImports] - the user's module
except ImportError:
    app = None
except Exception as e:  # noqa: a broken app must not take the agent down
    sys.print_exception(e)
    app = None

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

board.run(health=getattr(app, "healthy", None), app_step=_step if step else None)
