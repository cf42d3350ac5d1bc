"""The device agent: CTWing MQTT FOTA on top of the engine.

It informs its version each time it comes online, takes notices from /ota/upgrade,
runs the engine, reports progress on /ota/progress, reboots into the new image,
and confirms that image only when it is healthy. Run it beside your application
with the poll model: call `agent.poll()` from your main loop every 10-100 ms.
poll() returns quickly, except while an update runs: then it blocks until the
update ends (feeding the watchdog and keeping MQTT alive throughout).
"""
from micropython import const
from time import sleep_ms, ticks_diff, ticks_ms

from fota import protocol

_MAX_QUEUED = const(4)      # notices waiting for the main loop; more are dropped


def _log(*args):
    print("fota:", *args)


def release():
    """Unload what only an update needs (fota.updater: the agent's cold paths; the
    engine and its decoders, the journal, the HTTP client, TLS set-up), so the idle
    agent holds only the MQTT link, the protocol and its own state. Called once the
    link is made (start-up loaded the engine for its block buffer) and after every
    update that ends without a reboot."""
    import sys

    import fota

    for name in ("updater", "engine", "journal", "http", "httpchunk", "httpredirect", "tls",
                 "verify", "container", "inflate", "patch", "sbv2", "addloop"):
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
        # 'devices/d1' -> b'devices/d1/ota/inform'; '' -> b'/ota/inform' (CTWing). Bytes:
        # the link sends them as they are (no encoding per message).
        prefix = cfg["topic_prefix"].rstrip("/").encode() + b"/ota/"
        self.t_inform = prefix + b"inform"
        self.t_progress = prefix + b"progress"
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
        self.t_upgrade = prefix + b"upgrade"    # None once the link is made (first poll)
        self.trial_end = 0
        self.tls_off = False            # MQTT closed during downloads (tls_during_download)
        self.off = getattr(slot, "off", None)   # why OTA is off on this board, or None
        from fota import updater

        updater.boot(self, slot)        # the boot state: a trial, a rollback to report

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
            from fota import updater

            self.link = updater.attach(self, self.t_upgrade)
            self.t_upgrade = None
            release()
        self.link.poll()
        if self.link.connected:
            self._deliver()
        if self.trial is not None and ticks_diff(ticks_ms(), self.trial_end) >= 0:
            from fota import updater

            updater.trial_failed(self)
        if self.reboot_by is not None:
            from fota import updater

            updater.reboot_when_allowed(self)   # (stays loaded: the reboot follows)
            return
        while self.notices and self.task is None:
            from fota import updater

            report = updater.notice(self, self.notices.pop(0))
            if self.reboot_by is None:
                release()       # back to the idle footprint (no reboot follows)
            if report:
                self.reports.append(report)
                self._deliver()

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

    def _restart(self):
        try:
            self.link.close()
        except Exception:  # noqa: BLE001 - best effort before a reset
            pass
        if self.reset:
            self.reset()
