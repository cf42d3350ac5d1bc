"""Board start-up: config, watchdog, Wi-Fi, slot, agent. The entry points call this.

    from fota import board
    agent = board.start()           # None (and a clear message) when the config is bad
    while True:
        if agent:
            agent.poll()
        ...your application's work...
        time.sleep_ms(50)
"""


# The rp2 port refuses a longer WDT timeout (ValueError), ports/rp2/machine_wdt.c
# WDT_TIMEOUT_MAX: 16777 ms on the RP2350 (Pico 2 W), 8388 ms on the RP2040 (Pico W).
_RP2_WDT_MAX_MS = (16777, 8388)


def watchdog(wdt_s):
    """machine.WDT(...).feed for `wdt_s` seconds, within the board's limit: a value
    above it is clamped, with one line saying so; None (and a line) if the board has
    no usable watchdog. Never raises: a watchdog setting must not stop the app."""
    import machine

    ms = int(wdt_s * 1000)
    for limit in (0,) + _RP2_WDT_MAX_MS:     # as asked, then each rp2 chip's maximum
        if limit and ms <= limit:
            continue
        try:
            feed = machine.WDT(timeout=limit or ms).feed
        except ValueError:
            continue
        except OSError:
            break
        if limit:
            print("fota: watchdog: wdt_s %s is above this board's maximum (%d.%03d s): "
                  "using the maximum" % (wdt_s, limit // 1000, limit % 1000))
        return feed
    print("fota: watchdog: wdt_s %s is not accepted by this board: no watchdog" % wdt_s)
    return None


def default_slot(cfg):
    import sys

    if sys.platform == "esp32":
        from fota.esp32slot import Esp32Slot

        return Esp32Slot()
    from fota.fileslot import FileSlot

    return FileSlot("")


def wifi(cfg, feed=None, timeout_s=20, tries=3):
    """Station mode with a timeout per try; True once connected (or no Wi-Fi configured)."""
    w = cfg.get("wifi")
    if not w:
        return True
    import network
    from time import sleep_ms, ticks_diff, ticks_ms

    sta = network.WLAN(network.STA_IF)
    sta.active(True)
    try:
        sta.config(pm=0xA11140)   # Pico W: power saving off, or MQTT drops (CYW43 only)
    except (ValueError, OSError, TypeError):
        pass
    for attempt in range(tries):
        if sta.isconnected():
            return True
        print("fota: wifi connecting to", w["ssid"], "try", attempt + 1)
        sta.connect(w["ssid"], w.get("password", ""))
        start = ticks_ms()
        while not sta.isconnected() and ticks_diff(ticks_ms(), start) < timeout_s * 1000:
            if feed:
                feed()
            sleep_ms(200)
    return sta.isconnected()


def _unload(name):
    """Drop a module needed only at start-up, so its code's RAM is reclaimed."""
    import sys

    import fota

    sys.modules.pop("fota." + name, None)
    try:
        delattr(fota, name)
    except AttributeError:
        pass


def start(config="fota_config.json", health=None, slot=None):
    """Config, watchdog, Wi-Fi, slot and agent: the Agent, or None for a bad config.

    Start-up code runs once: this module and fota.config leave sys.modules, so their
    RAM comes back for the main loop once the caller drops its `board` name.
    """
    from fota import engine
    from fota.config import ConfigError, load

    _unload("board")
    engine.block_buffer()       # 4 KiB in one piece, before anything fragments the heap
    try:
        cfg = load(config)
    except ConfigError as exc:
        # A clear message and no reset: a crash loop would hide the problem.
        print("fota: config error:", exc, "- OTA disabled until it is fixed")
        return None
    finally:
        _unload("config")
    import machine

    feed = watchdog(cfg["wdt_s"]) if cfg["wdt_s"] else None
    if not wifi(cfg, feed):
        print("fota: no Wi-Fi yet; MQTT keeps retrying")
    import sys

    sys.modules.pop("network", None)    # a Python module only in simulation: free it
    from fota.agent import Agent, OffSlot

    if slot is None:
        try:
            slot = default_slot(cfg)
        except Exception as exc:  # noqa: BLE001 - OTA off, never the app
            slot = OffSlot("no update slot on this board: %r" % (exc,))
    try:
        return Agent(cfg, slot, health=health, reset=machine.reset, feed=feed)
    except Exception as exc:  # noqa: BLE001 - OTA off, never the app
        print("fota: OTA off: the agent could not start: %r" % (exc,))
        return None


def load_app(folder=""):
    """The user's `app` module in `folder` (None if there is none) and its health hook.

    A broken app does not stop the agent, so the board can still be updated
    remotely; it never passes the health check, so an update that breaks the app
    rolls back.
    """
    import os
    import sys

    for name in ("app.mpy", "app.py", "app"):
        try:
            os.stat((folder + "/" if folder else "") + name)
        except OSError:
            continue
        try:
            import app  # pyright: ignore[reportMissingImports] - the user's module
        except Exception as exc:  # noqa: BLE001 - a broken app must not take the agent down
            sys.print_exception(exc)
            return None, lambda: False
        return app, getattr(app, "healthy", None)
    return None, None


def start_app(folder=""):
    """The entry points' start: load_app(folder), then start() with the app's health
    hook. Returns (agent, the app's step() or None) for fota.agent.loop()."""
    app, health = load_app(folder)
    return start(health=health), getattr(app, "step", None)
