"""What the devices of a swarm share (`swarm.py` runs them, `swarmdevice.py` is one):
the options, the broker's address, the HTTP session, the connect pacing, the counters."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import aiomqtt

# aiomqtt's and paho's log lines (a broken pipe, a forced disconnect: each device's link
# trouble is counted in link_errors instead), on a logger of their own, kept quiet
MQTT_LOG = logging.getLogger("fota_host.sim.swarm.mqtt")
MQTT_LOG.setLevel(logging.CRITICAL)

STAT_KEYS = ("notices", "duplicate_notices", "bad_notices", "busy_refusals", "downloads",
             "resumed", "bytes", "failures", "upgraded_informs", "link_errors",
             "first_informs", "loop_errors", "progress_sent")


@dataclass
class SwarmOptions:
    count: int
    broker: str                          # mqtt://[user:pass@]host[:port], mqtts:// for TLS
    id_prefix: str = "swarm-"
    version: str = "1.0.0"               # what every device runs at the start
    until_version: str | None = None     # done when every device runs it (None: any upgrade)
    timeout: float = 600.0               # seconds; the run ends then whatever the state
    fail_rate: float = 0.0               # this fraction of devices corrupts its download (-3)
    slow_rate: float = 0.0               # this fraction downloads at `slow_bps`
    slow_bps: int = 32768
    seed: int = 1                        # which devices fail / are slow
    username: str | None = None          # one login for all (else the URL's)
    password: str | None = None
    credentials: dict[str, str] | None = None   # device id -> password (user = device id)
    ca: str | None = None                # CA file for mqtts:// and https:// downloads
    insecure: bool = False               # TLS without verification
    topic_prefix: str = "devices/{device}"
    module: str = "MCU"
    connect_rate: float = 500.0          # new MQTT connections per second, at most
    connect_window: int = 100            # connects under way at once (CONNECT to the
                                         # first inform's PUBACK): a busy machine slows them
    connect_threads: int = 32            # threads for paho's blocking connect()
    http_limit: int = 200                # downloads in flight at once (under the platform's
                                         # default 256 connections per client address)
    keepalive: int = 300                 # seconds; the agent's default is 60, but a swarm on
                                         # a busy machine can lag: the broker allows 1.5x
    mqtt_timeout: float = 60.0           # CONNACK, SUBACK and PUBACK deadline
    http_timeout: float = 30.0           # connect and idle deadline of a download
    progress_step: int = 5               # the device defaults (firmware/fota/config.py)
    progress_interval: float = 10.0
    start_delay: float = 0.0             # a random wait of up to this before a download
    reboot_delay: float = 0.5            # seconds "rebooting" between step 100 and reconnect
    settle: float = 1.0                  # seconds every device must stay settled to end


@dataclass
class Broker:
    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None


class Shared:
    """What every device of the swarm shares: options, broker, HTTP session, counters."""

    def __init__(self, opts: SwarmOptions, broker: Broker, session: Any,
                 tls: ssl.SSLContext | None) -> None:
        self.opts, self.broker, self.session, self.tls = opts, broker, session, tls
        self.stats = dict.fromkeys(STAT_KEYS, 0)
        self.jobs: set[asyncio.Future[Any]] = set()
        self._next_connect = 0.0
        self.handshakes = asyncio.Semaphore(opts.connect_window)

    async def connect_slot(self) -> None:
        """Wait for this connection's turn: at most `connect_rate` a second."""
        now = time.monotonic()
        at = max(now, self._next_connect)
        self._next_connect = at + 1.0 / self.opts.connect_rate
        if at > now:
            await asyncio.sleep(at - now)

    def new_client(self, device_id: str) -> aiomqtt.Client:
        b, opts = self.broker, self.opts
        user, password = opts.username or b.username, opts.password or b.password
        if opts.credentials is not None:
            user, password = device_id, opts.credentials[device_id]
        return _Client(b.host, b.port, username=user, password=password, logger=MQTT_LOG,
                       identifier=device_id, clean_session=True,
                       keepalive=opts.keepalive, timeout=opts.mqtt_timeout,
                       tls_context=self.tls)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        job = asyncio.ensure_future(coro)
        self.jobs.add(job)
        job.add_done_callback(self.jobs.discard)


class _Client(aiomqtt.Client):
    """aiomqtt's client, with paho's housekeeping every keepalive/4 seconds instead of every
    second, and paho's "socket wants writing" hook checked when it runs.

    aiomqtt hands `add_writer(fd)` to the loop with call_soon_threadsafe; when the socket
    closes before that runs (a device disconnecting right after a publish: its reboot),
    the fd is gone (EBADF) or, with thousands of connections opening, already another
    device's socket, whose writer it then replaces: that device's packets stay queued
    and its publishes time out. Here the writer is added only while the socket is still
    this client's.
    """

    async def _misc_loop(self) -> None:
        # paho's housekeeping (keepalive pings, their answer's deadline): aiomqtt runs it
        # every second, 10 000 wakeups a second for 10 000 devices, which starved the loop
        # at 10k; every keepalive/4 up to 30 s (the broker waits 1.5 x keepalive).
        every = min(max(1.0, self._keepalive / 4), 30.0)
        while self._client.loop_misc() == 0:     # MQTT_ERR_SUCCESS
            await asyncio.sleep(every)

    def _on_socket_register_write(self, client: Any, userdata: Any, sock: Any) -> None:
        def write() -> None:
            try:
                client.loop_write()
            except Exception as exc:  # noqa: BLE001 - a broken link ends the session
                if not self._disconnected.done():
                    self._disconnected.set_exception(exc)

        def add() -> None:
            if client.socket() is sock:
                self._loop.add_writer(sock.fileno(), write)

        self._loop.call_soon_threadsafe(add)
