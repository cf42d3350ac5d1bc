"""The device agent: CTWing MQTT FOTA on top of the engine.

It informs its version each time it comes online, takes notices from /ota/upgrade,
runs the engine, reports progress on /ota/progress, reboots into the new image,
and confirms that image only when it is healthy. Run it beside your application
with the poll model: call `agent.poll()` from your main loop every 10-100 ms.
poll() returns quickly, except while an update runs: then it blocks until the
update ends (feeding the watchdog and keeping MQTT alive throughout).
"""
import sys
from micropython import const
from time import sleep_ms, ticks_add, ticks_diff, ticks_ms

from fota import protocol

_MAX_QUEUED = const(4)      # notices waiting for the main loop; more are dropped
_ENOSPC = const(28)
JOURNAL = "fota_journal.json"


def _log(*args):
    print("fota:", *args)


def release():
    """Unload what only an update needs (the engine and its decoders, the journal, the
    HTTP client, TLS set-up), so the idle agent holds only the MQTT link, the protocol
    and its own state. Called once the link is made (start-up loaded the engine for its
    block buffer) and after every update that ends without a reboot."""
    import sys

    import fota

    for name in ("engine", "journal", "http", "httpchunk", "httpredirect", "tls", "verify",
                 "container", "inflate", "patch", "sbv2", "addloop"):
        if sys.modules.pop("fota." + name, None) is not None:
            try:
                delattr(fota, name)
            except AttributeError:
                pass


def loop(agent, step=None, period_ms=20):
    """The board's main loop: agent.poll() (agent None: OTA disabled by a bad config)
    beside the application's optional step(), forever. An agent that fails (a CA file
    that can't be read, a bug) is switched off with its reason: OTA must never stop the
    application."""
    while True:
        if agent:
            try:
                agent.poll()
            except Exception as exc:  # noqa: BLE001 - OTA off, the app goes on
                import sys

                sys.print_exception(exc)
                print("fota: OTA off until the next reset: %s" % (exc,))
                agent = None
        if step:
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - stop calling a failing app; keep the agent
                import sys

                sys.print_exception(exc)
                step = None
        sleep_ms(period_ms)


class OffSlot:
    """A board where OTA cannot work (`off` says why): the agent informs its version
    and answers notices with -1 and that reason; the application runs as ever."""

    version = "unknown"

    def __init__(self, why):
        self.off = why


class Agent:
    def __init__(self, cfg, slot, health=None, reset=None, feed=None, may_reboot=None):
        self.cfg = cfg
        self.slot = slot
        self.version = slot.version
        self.module = cfg["module"]
        # 'devices/d1' -> 'devices/d1/ota/inform'; '' -> '/ota/inform' (CTWing)
        prefix = cfg["topic_prefix"].rstrip("/") + "/ota/"
        self.t_inform = prefix + "inform"
        self.t_progress = prefix + "progress"
        self.health = health            # app hook: () -> True when healthy
        self.reset = reset              # machine.reset
        self.feed = feed                # watchdog feed
        self.may_reboot = may_reboot    # app hook: () -> True when a reboot is fine now
        self.reboot_by = None           # a new image waits for may_reboot() until then
        self.notices = []
        self.reports = []               # [task, step, desc] to deliver with QoS 1
        self.task = None                # task being worked on
        self.online = False             # inform due (set on every connect)
        self.forget_after_report = False
        self.trial = None
        self.inform_task = -1
        self.restart_after_report = False
        self.off = getattr(slot, "off", None)   # why OTA is off on this board, or None
        if self.off:
            _log("OTA off:", self.off)
            state, record = "normal", None
        else:
            state, record = slot.boot_state()
        if state == "damaged":
            # Unknown state is a failure, never a success: not confirmed, reported, and
            # (ESP32) a reset returns to the last confirmed image if this one is on trial.
            why = record["reason"]
            self.reports.append([record.get("task", -1), -1, why])
            self.forget_after_report = True
            self.restart_after_report = hasattr(slot, "running_label")
            _log("device state damaged:", why)
        elif state == "pending":
            self.trial = record
            self.inform_task = record.get("task", -1)
            self.trial_end = ticks_add(ticks_ms(), int(cfg["health_deadline_s"] * 1000))
            _log("new image on trial for task", self.inform_task)
        elif state == "rolled_back":
            why = record.get("reason") or "new image was not confirmed"
            self.reports.append([record.get("task", -1), -1, "rolled back: " + why])
            self.forget_after_report = True
            _log("rolled back:", why)
        self.t_upgrade = prefix + "upgrade"     # None once the link is made

    def _attach(self):
        # On the first poll(), not in __init__: board.start() and the config are gone by
        # then, so the MQTT modules load into the RAM they gave back.
        link = self.link = self._make_link()
        link.on_message = self._on_message
        link.on_connect = self._on_connect
        link.subscribe(self.t_upgrade, 1)
        self.t_upgrade = None
        release()

    def _make_link(self):
        from fota.mqtt import Link

        b = self.cfg.pop("broker")     # needed only here
        tls = None
        if b["tls"]:
            from fota.tls import context, read_ca

            tls = context(read_ca(b["ca"]), b["insecure"])
        return Link(self.cfg["device_id"], b["host"], b["port"], b["user"], b["password"],
                    b["keepalive"], tls, None, int(b["timeout_s"] * 1000),
                    tick=self.feed)     # connects and slow brokers feed the watchdog too

    # --- callbacks from the link: record only, the work happens in poll() ---
    def _on_message(self, topic, msg):
        # Validated at once (cheap, no I/O) so a flood of junk can't push out a real
        # notice; the newest notices are kept.
        try:
            notice = protocol.parse_notice(msg)
        except ValueError as exc:
            _log("notice dropped:", exc)
            return
        if notice[1]["module"] != self.module:
            return
        if len(self.notices) >= _MAX_QUEUED:
            _log("notice dropped: too many waiting")
            self.notices.pop(0)
        self.notices.append(notice)

    def _on_connect(self):
        self.online = True

    # --- the main-loop entry point ---
    def poll(self):
        if self.feed:
            self.feed()
        if self.t_upgrade:
            self._attach()
        self.link.poll()
        if self.link.connected:
            self._deliver()
        if self.trial is not None:
            self._check_trial()
        if self.reboot_by is not None:
            self._reboot_when_allowed()
            return
        while self.notices and self.task is None:
            self._notice(self.notices.pop(0))

    def _send(self, topic, task, qos, **params):
        """An inform or a progress report; False when the link is down."""
        params["module"] = self.module
        return self.link.connected and self.link.publish(topic, protocol.message(task, params),
                                                         qos)

    def _deliver(self):
        """Reports first (a rollback is told before the version), then the inform."""
        while self.reports:
            task, step, desc = self.reports[0]
            desc = protocol.describe(step, desc, self.cfg["desc_lang"])
            if not self._send(self.t_progress, task, 1, step=step, desc=desc):
                return
            self.reports.pop(0)
        if self.forget_after_report:
            self.slot.forget()
            self.forget_after_report = False
            if self.restart_after_report:
                _log("restarting into the last confirmed image")
                self._restart()
        if self.online and (self.trial is None or self._healthy()):
            if self._send(self.t_inform, self.inform_task, 1, version=self.version):
                self.online = False
                if self.trial is not None:
                    # network up, MQTT up, inform acknowledged, app healthy: keep it
                    self.slot.confirm()
                    self.trial = None
                    _log("image confirmed")
                self.inform_task = -1

    def _healthy(self):
        try:
            return self.health is None or bool(self.health())
        except Exception as exc:  # noqa: BLE001 - a crashing health hook is an unhealthy app
            _log("health hook failed:", exc)
            return False

    def _check_trial(self):
        if ticks_diff(ticks_ms(), self.trial_end) < 0:
            return
        if not self.link.connected:
            why = "no MQTT connection within %ds" % self.cfg["health_deadline_s"]
        elif not self._healthy():
            why = "application health check failed"
        else:
            why = "version inform not acknowledged"
        _log("trial failed:", why, "- resetting to the previous image")
        self.slot.note(why)
        self._restart()

    def _restart(self):
        try:
            self.link.close()
        except Exception:  # noqa: BLE001 - best effort before a reset
            pass
        if self.reset:
            self.reset()

    # --- notices ---
    def _notice(self, notice):
        task, p = notice
        # Both ids: the notice's taskId (the sub-task) and the platform's task (urlTaskId)
        _log("task", task, "(platform task %s):" % protocol.url_task(p["url"]),
             "version", p["version"], "offered")
        if p["version"] == self.version:
            # Nothing to download: tell the platform we already run it.
            self._report_inform(task)
            return
        if self.off:
            step, reason = -1, "OTA is off: " + self.off
        else:
            self.task = task
            step = -1
            try:
                step, reason = self._update(task, p)
            finally:
                self.task = None
                if step != 100:
                    release()       # back to the idle footprint (no reboot follows)
        if step == 100:
            self._finish(task)
        else:
            _log("task", task, "failed:", reason)
            self.reports.append([task, step, reason])
            self._deliver()

    def _report_inform(self, task):
        if not self._send(self.t_inform, task, 1, version=self.version):
            self.inform_task = task      # said on the next connect instead
            self.online = True

    def _busy_refusals(self):
        while self.notices:
            task = self.notices.pop(0)[0]
            if task != self.task:
                self._send(self.t_progress, task, 1, step=-1,
                           desc=protocol.describe(-1, "busy", self.cfg["desc_lang"]))

    def _update(self, task, p):
        """One update attempt: (step, reason). A failed attempt gives back the
        filesystem space it took (file slots), so the app keeps its room."""
        step, reason = self._attempt(task, p)
        if step != 100:
            discard = getattr(self.slot, "discard", None)
            if discard:
                try:
                    discard()
                    from fota import statefile

                    statefile.clear(JOURNAL)
                    statefile.clear(JOURNAL + ".head")
                except OSError as exc:
                    _log("cleaning up after the failed update:", exc)
        return step, reason

    def _tick(self):
        """About once a second while a download waits or reads (fota.http's tick):
        feed the watchdog, keep MQTT alive (pings, reading what the broker sent),
        refuse other tasks."""
        if self.feed:
            self.feed()
        self.link.poll()
        if self.notices:
            self._busy_refusals()

    def _attempt(self, task, p):
        try:
            from fota import engine

            engine.block_buffer()   # 4 KiB in one piece first: before the HTTP client
            from fota import http
        except MemoryError:         # reported, and released by _notice: OTA stays on
            return -1, "out of memory loading the updater"

        cfg = self.cfg
        dl = cfg["download"]
        size = p["size"]
        room = getattr(self.slot, "room", None)
        if room:
            try:
                why = room(size)
            except OSError as exc:
                why = "cannot check free space: %s" % exc
            if why:
                return -4, why
        if dl["start_delay_s"]:
            self._start_delay(dl["start_delay_s"])
        try:
            url = p["url"] if dl["url_as_is"] else protocol.download_url(
                p["url"], cfg["device_id"], p["token"])
            ca = None
            if url.startswith("https://"):
                from fota.tls import read_ca

                ca = read_ca(dl["ca"])
            # allow_insecure also lets an https -> http redirect through (with a warning)
            source = http.source(url, int(dl["timeout_s"] * 1000), ca, dl["allow_insecure"],
                                 int(dl["idle_s"] * 1000), int(dl["total_s"] * 1000),
                                 self._tick, dl["allow_insecure"])
        except engine.UpdateError as exc:
            return exc.step, exc.reason
        except ValueError as exc:
            return -2, "bad url: %s" % exc
        step_pct = cfg["progress_step"]
        every = int(cfg["progress_interval_s"] * 1000)
        sent = [0, ticks_ms()]      # last percent sent, when

        def progress(done, total):
            self._tick()
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
                self._send(self.t_progress, task, 0, step=pct, desc="downloading")

        _log("task", task, "updating", self.version, "->", p["version"])
        # engine.update, not run(): a full filesystem (the journal, the trial record)
        # is a write failure (-4), not an internal error.
        try:
            return engine.update(self.slot, source, size, p["md5"], p.get("sha256"), progress,
                                 JOURNAL, task, trusted=cfg.get("trusted_keys"),
                                 allow_unsigned=cfg.get("allow_unsigned", False))
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

    def _finish(self, task):
        """Image written, verified and selected: say so, then reboot into it."""
        desc = "written and verified, rebooting"
        # The link may be down: wait for it a while (the new image's inform is what
        # decides success, so the reboot happens anyway after the deadline).
        end = ticks_add(ticks_ms(), int(self.cfg["health_deadline_s"] * 1000))
        while not self._send(self.t_progress, task, 1, step=100, desc=desc):
            if ticks_diff(end, ticks_ms()) <= 0:
                break
            if self.feed:
                self.feed()
            self.link.poll()
            sleep_ms(50)
        if self.may_reboot is None:   # the app module's may_reboot(), if it has one
            self.may_reboot = getattr(sys.modules.get("app"), "may_reboot", None)
        if self.may_reboot is None:
            _log("task", task, "done: rebooting into the new image")
            self._restart()
            return
        # The application decides when (a motor must stop first): poll() asks it each
        # time, and reboots anyway after reboot_defer_max_s.
        self.task = task
        self.reboot_by = ticks_add(ticks_ms(), int(self.cfg["reboot_defer_max_s"] * 1000))
        _log("task", task, "done: the new image waits for the application's permission")
        self._reboot_when_allowed()

    def _reboot_when_allowed(self):
        if self.notices:
            self._busy_refusals()
        try:
            allowed = bool(self.may_reboot())
        except Exception as exc:  # noqa: BLE001 - a failing hook must not hold the image
            _log("may_reboot hook failed:", exc)
            allowed = True
        by = self.reboot_by
        if not allowed and by is not None and ticks_diff(by, ticks_ms()) > 0:
            return
        _log("task", self.task, "rebooting into the new image",
             "" if allowed else "(reboot_defer_max_s reached)")
        self.reboot_by = None
        self._restart()

    def _start_delay(self, delay_s):
        """A random wait of up to delay_s before the download, so that a wave of devices
        notified together does not reach the file server in one instant (MQTT and the
        watchdog kept alive)."""
        from random import getrandbits

        end = ticks_add(ticks_ms(), int(delay_s * 1000) * getrandbits(10) // 1024)
        while ticks_diff(end, ticks_ms()) > 0:
            self._tick()
            sleep_ms(min(100, max(1, ticks_diff(end, ticks_ms()))))
