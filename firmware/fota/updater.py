"""The agent's cold paths: start-up state, the link set-up, and everything a notice
sets off (download, engine, report, reboot). Loaded when needed and released after
(fota.agent.release), so the idle agent keeps only its main-loop code (issue #17).

Functions take the Agent `a` first; they were its methods, and keep its attributes.
"""
import sys
from micropython import const
from time import sleep_ms, ticks_add, ticks_diff, ticks_ms

from fota import protocol

_ENOSPC = const(28)
JOURNAL = "fota_journal.json"


def _log(*args):
    print("fota:", *args)


def boot(a, slot):
    """The slot's boot state at start-up: a trial to confirm, or a failure to report."""
    if a.off:
        _log("OTA off:", a.off)
        return
    state, record = slot.boot_state()
    if state == "damaged":
        # Unknown state is a failure, never a success: not confirmed, reported, and
        # (ESP32) a reset returns to the last confirmed image if this one is on trial.
        why = record["reason"]
        a.reports.append([record.get("task", -1), -1, why])
        a.forget_after_report = True
        a.restart_after_report = hasattr(slot, "running_label")
        _log("device state damaged:", why)
    elif state == "pending":
        a.trial = record
        a.inform_task = record.get("task", -1)
        a.trial_end = ticks_add(ticks_ms(), int(a.cfg["health_deadline_s"] * 1000))
        _log("new image on trial for task", a.inform_task)
    elif state == "rolled_back":
        why = record.get("reason") or "new image was not confirmed"
        a.reports.append([record.get("task", -1), -1, "rolled back: " + why])
        a.forget_after_report = True
        _log("rolled back:", why)


def attach(a, topic):
    # On the first poll(), not in __init__: board.start() and the config are gone by
    # then, so the MQTT modules load into the RAM they gave back.
    from fota.mqtt import Link

    b = a.cfg.pop("broker")     # needed only here
    tls = None
    # Close the MQTT TLS session while a download runs (its buffers, socket and
    # context for the HTTPS one): then the link makes a context for each connection.
    a.tls_off = bool(b["tls"]) and b["tls_during_download"] == "close"
    if a.tls_off:
        tls = (b["ca"], b["insecure"])
    elif b["tls"]:
        from fota.tls import context, read_ca

        tls = context(read_ca(b["ca"]), b["insecure"])
    link = Link(a.cfg["device_id"], b["host"], b["port"], b["user"], b["password"],
                b["keepalive"], tls, None, int(b["timeout_s"] * 1000),
                tick=a.feed)    # connects and slow brokers feed the watchdog too
    link.on_message = a._on_message
    link.on_connect = a._on_connect
    link.subscribe(topic, 1)
    return link


def trial_failed(a):
    if not a.link.connected:
        why = "no MQTT connection within %ds" % a.cfg["health_deadline_s"]
    elif not a._healthy():
        why = "application health check failed"
    else:
        why = "version inform not acknowledged"
    _log("trial failed:", why, "- resetting to the previous image")
    a.slot.note(why)
    a._restart()


# --- notices ---
def notice(a, n):
    """Work on one notice; [task, step, reason] to report, or None (nothing to
    report: the version inform went out, or the reboot into the new image follows)."""
    task, p = n
    # Both ids: the notice's taskId (the sub-task) and the platform's task (urlTaskId)
    _log("task", task, "(platform task %s):" % protocol.url_task(p["url"]),
         "version", p["version"], "offered")
    if p["version"] == a.version:
        # Nothing to download: tell the platform we already run it.
        if not a._send(a.t_inform, task, 1, version=a.version):
            a.inform_task = task         # said on the next connect instead
            a.online = True
        return None
    if a.off:
        step, reason = -1, "OTA is off: " + a.off
    else:
        a.task = task
        step = -1
        try:
            step, reason = _update(a, task, p)
        finally:
            a.task = None
            if a.tls_off:
                a.link.reopen()     # the report goes out once it is connected again
    if step == 100:
        _finish(a, task)
        return None
    _log("task", task, "failed:", reason)
    return [task, step, reason]


def busy_refusals(a):
    while a.notices:
        task = a.notices.pop(0)[0]
        if task != a.task:
            a._send(a.t_progress, task, 1, step=-1,
                    desc=protocol.describe(-1, "busy", a.cfg["desc_lang"]))


def _update(a, task, p):
    """One update attempt: (step, reason). A failed attempt gives back the
    filesystem space it took (file slots), so the app keeps its room."""
    step, reason = _attempt(a, task, p)
    if step != 100:
        discard = getattr(a.slot, "discard", None)
        if discard:
            try:
                discard()
                from fota import statefile

                statefile.clear(JOURNAL)
                statefile.clear(JOURNAL + ".head")
            except OSError as exc:
                _log("cleaning up after the failed update:", exc)
    return step, reason


def _tick(a):
    """About once a second while a download waits or reads (fota.http's tick):
    feed the watchdog, keep MQTT alive (pings, reading what the broker sent),
    refuse other tasks."""
    if a.feed:
        a.feed()
    a.link.poll()
    if a.notices:
        busy_refusals(a)


def _drop_http():
    """The HTTP client and TLS set-up leave once the download is over: the checks
    after it (read-back, the RSA signature) get their RAM (issue #14)."""
    import fota

    for name in ("http", "httpchunk", "httpredirect", "tls"):
        if sys.modules.pop("fota." + name, None) is not None:
            try:
                delattr(fota, name)
            except AttributeError:
                pass


def _attempt(a, task, p):
    try:
        from fota import engine

        engine.block_buffer()   # 4 KiB in one piece first: before the HTTP client
        from fota import http
    except MemoryError:         # reported, and released by the agent: OTA stays on
        return -1, "out of memory loading the updater"

    cfg = a.cfg
    dl = cfg["download"]
    size = p["size"]
    room = getattr(a.slot, "room", None)
    if room:
        try:
            why = room(size)
        except OSError as exc:
            why = "cannot check free space: %s" % exc
        if why:
            return -4, why
    if dl["start_delay_s"]:
        _start_delay(a, dl["start_delay_s"])
    if a.tls_off:
        # broker.tls_during_download "close": one TLS session at a time. No progress
        # and no busy refusals until the download is over (nothing is connected).
        _log("task", task, "MQTT closed for the download (tls_during_download close)")
        a.link.close()

    def tick():
        _tick(a)

    try:
        url = p["url"] if dl["url_as_is"] else protocol.download_url(
            p["url"], cfg["device_id"], p["token"])
        ca = None
        if url.startswith("https://"):
            from fota.tls import read_ca

            ca = read_ca(dl["ca"])
        # allow_insecure also lets an https -> http redirect through (with a warning)
        held = [http.source(url, int(dl["timeout_s"] * 1000), ca, dl["allow_insecure"],
                            int(dl["idle_s"] * 1000), int(dl["total_s"] * 1000), tick,
                            dl["allow_insecure"])]
    except engine.UpdateError as exc:
        return exc.step, exc.reason
    except ValueError as exc:
        return -2, "bad url: %s" % exc
    except MemoryError:         # the TLS context: reported, OTA stays on
        return -1, "out of memory setting up the download"
    http = ca = None

    def source(offset, size):
        return held[0](offset, size)

    def downloaded():
        held.clear()
        _drop_http()

    step_pct = cfg["progress_step"]
    every = int(cfg["progress_interval_s"] * 1000)
    sent = [0, ticks_ms()]      # last percent sent, when

    def progress(done, total):
        _tick(a)
        pct = done * 100 // total
        if pct < 1:
            pct = 1
        elif pct > 99:
            pct = 99                     # 100 only once written *and* verified
        now = ticks_ms()
        if pct != sent[0] and (pct - sent[0] >= step_pct or ticks_diff(now, sent[1]) >= every):
            sent[0] = pct
            sent[1] = now
            # QoS 0: progress must never stall the download
            a._send(a.t_progress, task, 0, step=pct, desc="downloading")

    _log("task", task, "updating", a.version, "->", p["version"])
    # engine.update, not run(): a full filesystem (the journal, the trial record)
    # is a write failure (-4), not an internal error.
    try:
        return engine.update(a.slot, source, size, p["md5"], p.get("sha256"), progress,
                             JOURNAL, task, trusted=cfg.get("trusted_keys"),
                             allow_unsigned=cfg.get("allow_unsigned", False),
                             downloaded=downloaded)
    except engine.UpdateError as exc:
        return exc.step, exc.reason
    except MemoryError:
        return -1, "out of memory"
    except OSError as exc:
        if exc.args and exc.args[0] == _ENOSPC:
            return -4, "filesystem full: %s" % (exc,)
        return -1, "internal error: %r" % (exc,)
    except Exception as exc:  # noqa: BLE001 - an update must never crash the device
        return -1, "internal error: %r" % (exc,)


def _finish(a, task):
    """Image written, verified and selected: say so, then reboot into it."""
    desc = "written and verified, rebooting"
    # The link may be down: wait for it a while (the new image's inform is what
    # decides success, so the reboot happens anyway after the deadline).
    end = ticks_add(ticks_ms(), int(a.cfg["health_deadline_s"] * 1000))
    while not a._send(a.t_progress, task, 1, step=100, desc=desc):
        if ticks_diff(end, ticks_ms()) <= 0:
            break
        if a.feed:
            a.feed()
        a.link.poll()
        sleep_ms(50)
    if a.may_reboot is None:   # the app module's may_reboot(), if it has one
        a.may_reboot = getattr(sys.modules.get("app"), "may_reboot", None)
    if a.may_reboot is None:
        _log("task", task, "done: rebooting into the new image")
        a._restart()
        return
    # The application decides when (a motor must stop first): poll() asks it each
    # time, and reboots anyway after reboot_defer_max_s.
    a.task = task
    a.reboot_by = ticks_add(ticks_ms(), int(a.cfg["reboot_defer_max_s"] * 1000))
    _log("task", task, "done: the new image waits for the application's permission")
    reboot_when_allowed(a)


def reboot_when_allowed(a):
    if a.notices:
        busy_refusals(a)
    try:
        allowed = bool(a.may_reboot())
    except Exception as exc:  # noqa: BLE001 - a failing hook must not hold the image
        _log("may_reboot hook failed:", exc)
        allowed = True
    by = a.reboot_by
    if not allowed and by is not None and ticks_diff(by, ticks_ms()) > 0:
        return
    _log("task", a.task, "rebooting into the new image",
         "" if allowed else "(reboot_defer_max_s reached)")
    a.reboot_by = None
    a._restart()


def _start_delay(a, delay_s):
    """A random wait of up to delay_s before the download, so that a wave of devices
    notified together does not reach the file server in one instant (MQTT and the
    watchdog kept alive)."""
    from random import getrandbits

    end = ticks_add(ticks_ms(), int(delay_s * 1000) * getrandbits(10) // 1024)
    while ticks_diff(end, ticks_ms()) > 0:
        _tick(a)
        sleep_ms(min(100, max(1, ticks_diff(end, ticks_ms()))))
