"""The platform's MQTT side: the broker address, and the client that subscribes to every
device's inform and progress and publishes the upgrade notices (paho-mqtt, MQTT 3.1.1).

With a share group (several instances on one broker) the device topics are subscribed as
`$share/<group>/...`: see mqttshare.py."""

from __future__ import annotations

import logging
import ssl
import struct
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt

from . import metrics
from .core import Platform
from .lograte import LogRate
from .mqttshare import ShareGroup, client_name
from .validate import PlatformError

log = logging.getLogger("fota.platform")
_PUBACK = 0x40
DRAIN = 1.0  # seconds of read-ahead reports handled in one pass of the network loop
_rate = LogRate(log, burst=3, window=60)


@dataclass
class BrokerURL:
    scheme: str
    host: str
    port: int
    username: str | None = None
    password: str | None = None

    @property
    def tls(self) -> bool:
        return self.scheme == "mqtts"

    def public(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"


def parse_broker_url(url: str) -> BrokerURL:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise PlatformError(f"broker must look like mqtt[s]://[user:pass@]HOST:PORT, got {url!r}")
    try:
        port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
    except ValueError:
        raise PlatformError(f"bad port in {url!r}") from None
    unquote = urllib.parse.unquote
    return BrokerURL(parts.scheme, parts.hostname, port,
                     unquote(parts.username) if parts.username else None,
                     unquote(parts.password) if parts.password else None)


class _Client(mqtt.Client):
    """paho's client with an outbox drained by its own network thread.

    The platform runs paho's `loop_forever` in a thread of its own (not `loop_start`, whose
    wake-up socket pair costs two extra system calls per received QoS 1 message), so other
    threads must not write to the socket: they queue notices here, and the network thread
    sends them after each pass of its loop (at most `timeout` later).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.outbox: deque[tuple[str, bytes, Callable[[], None] | None] | None] = deque()
        # Reports are acknowledged (PUBACK) only once the platform stored them (manual ack):
        # (mid, qos) queued by any thread, sent here.
        self.acks: deque[tuple[int, int]] = deque()
        self.on_acks: dict[int, Callable[[], None]] = {}  # notice mid -> its PUBACK callback
        self.calls: deque[Callable[[], Any]] = deque()  # run by the network thread
        self.last_error: BaseException | None = None
        # Read-ahead (`_sock_recv`): what one recv brought and how much of it paho took.
        self._rbuf = b""
        self._rpos = 0
        self._rsock: Any = None

    def reconnect(self) -> mqtt.MQTTErrorCode:
        try:
            return super().reconnect()
        except OSError as exc:  # kept: paho's on_connect_fail does not say why
            self.last_error = exc
            raise

    def _sock_recv(self, bufsize: int) -> bytes:
        # paho reads a report in three system calls (1 byte of packet type, the length a
        # byte at a time, then the rest); one recv of up to 64 KiB serves many reports.
        # Where that ingest time went: bench/bench_platform.py (py-spy, issue #18).
        if self._rsock is not self._sock:           # a new connection: nothing buffered
            self._rsock, self._rbuf, self._rpos = self._sock, b"", 0
        if self._rpos >= len(self._rbuf):
            data = super()._sock_recv(65536)        # BlockingIOError etc. as paho expects
            if not data:
                return data
            self._rbuf, self._rpos = data, 0
        out = self._rbuf[self._rpos:self._rpos + bufsize]
        self._rpos += len(out)
        return out

    def _send_acks(self) -> None:
        # One send for this pass's PUBACKs: paho's ack() writes each 4-byte PUBACK with a
        # system call of its own. The packets are the ones ack() makes (MQTT 3.1.1 3.4;
        # in MQTT 5 a PUBACK without a reason code means success); paho-mqtt is pinned.
        packets = []
        while self.acks:
            mid, qos = self.acks.popleft()
            if qos == 1:
                packets.append(struct.pack("!BBH", _PUBACK, 2, mid))
            else:
                self.ack(mid, qos)
        if packets and self._sock is not None:
            self._packet_queue(_PUBACK, b"".join(packets), 0, 0)

    def _loop(self, timeout: float = 1.0) -> mqtt.MQTTErrorCode:
        rc = super()._loop(timeout)
        # Reports already read ahead wait in our buffer, where select() cannot see them.
        # At most DRAIN seconds of them a pass: the acknowledgements and keepalive pings go
        # out in between (a slow store must not make the broker drop the platform).
        deadline = time.monotonic() + DRAIN
        while not rc and self._sock is not None and self._rsock is self._sock and \
                self._rpos < len(self._rbuf) and time.monotonic() < deadline:
            rc = self.loop_read()
        self._send_acks()
        while self.calls:
            self.calls.popleft()()
        while self.outbox:
            item = self.outbox.popleft()
            if item is None:
                self.disconnect()
                break
            info = self.publish(item[0], item[1], qos=1)
            if item[2] is not None:
                self.on_acks[info.mid] = item[2]
        return rc


class MqttLink:
    """The platform's own MQTT client: subscribes to every device's inform and progress."""

    def __init__(self, url: BrokerURL, platform: Platform, client_id: str,
                 ca: str | None, insecure: bool, share_group: str | None = None,
                 instance: str = "") -> None:
        self.platform = platform
        self.url = url
        self.ca, self.insecure = ca, insecure
        self.share = ShareGroup(self, share_group) if share_group else None
        if self.share is not None:  # each member a session of its own
            client_id = client_name(client_id, instance or metrics.instance())
        self.client_id = client_id
        self.last_message = 0.0  # monotonic time of the last device message
        self.connected = threading.Event()
        self.answered = threading.Event()  # the broker answered the first CONNECT
        self.refused: str | None = None  # its reason when it refused the platform
        self.stopping = False
        # A persistent session: an external broker keeps device reports (QoS 1) while the
        # platform restarts.
        self.client = _Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                              clean_session=False, manual_ack=True)
        self.client.max_queued_messages_set(0)
        self.client.max_inflight_messages_set(100)
        self.configure(self.client)
        if url.tls and insecure:
            log.warning("--insecure: the broker certificate's host name is not checked; "
                        "whoever holds any certificate from the CA can pose as %s", url.host)
        elif url.username and not url.tls and url.host not in ("127.0.0.1", "::1", "localhost"):
            log.warning("the platform's broker password travels in clear text (%s); use "
                        "mqtts:// beyond this machine", url.public())
        if self.share is not None:
            self.share.will(self.client, client_id)
        self.client.reconnect_delay_set(0.2, 5)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.client.on_connect_fail = self._on_connect_fail
        self.thread = threading.Thread(target=self._run, name="fota-mqtt", daemon=True)

    def new_client(self, client_id: str) -> _Client:
        """A persistent-session client with this link's login and TLS (a takeover's)."""
        client = _Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                         clean_session=False, manual_ack=True)
        self.configure(client)
        return client

    def connect_args(self) -> tuple[str, int]:
        return self.url.host, self.url.port

    def configure(self, client: mqtt.Client) -> None:
        """The broker login and TLS of this link on `client` (also a takeover's client)."""
        if self.url.username:
            client.username_pw_set(self.url.username, self.url.password)
        if self.url.tls:
            client.tls_set(ca_certs=self.ca)
            if self.insecure:
                client.tls_insecure_set(True)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any,
                    props: Any = None) -> None:
        if rc.is_failure:
            log.error("broker refused the platform: %s", rc)
            self.refused = str(rc)
            self.answered.set()
            return
        self.refused = None
        # Every connect subscribes again: a broker restarted without its sessions forgot them.
        if self.share is not None:
            client.subscribe(self.share.subscriptions())
            self.share.announce(client, self.client_id)
        else:
            client.subscribe([(t, 1) for t in self.platform.topics.subscriptions()])
        self.connected.set()
        self.answered.set()
        log.info("connected to broker %s%s", self.url.public(),
                 f" (share group {self.share.group}, client id {self.client_id})"
                 if self.share is not None else "")

    def why(self) -> str:
        """The last connection failure in words; a certificate problem named as one."""
        exc = self.client.last_error
        if exc is None:
            return "no answer yet"
        if isinstance(exc, ssl.SSLCertVerificationError):
            return (f"TLS certificate of {self.url.host} not accepted: "
                    f"{exc.verify_message or exc.reason} (check --ca and the broker's "
                    "certificate names)")
        if isinstance(exc, ssl.SSLError):
            return f"TLS handshake with {self.url.host} failed: {exc.reason or exc}"
        return f"{type(exc).__name__}: {exc}"

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        _rate.log(logging.WARNING, self.url.public(), "cannot connect to broker %s: %s",
                  self.url.public(), self.why())

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any,
                       props: Any = None) -> None:
        self.connected.clear()
        if self.stopping:
            log.info("disconnected from broker")
        else:
            log.warning("disconnected from broker (%s); reconnecting", rc)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        acks, mid, qos = self.client.acks, msg.mid, msg.qos
        if self.share is not None and self.share.is_status(msg.topic):
            acks.append((mid, qos))
            self.share.on_status(msg.topic, msg.payload, self.client_id)
            return
        self.last_message = time.monotonic()
        self.count(msg.topic)
        self.platform.on_message(msg.topic, msg.payload, lambda: acks.append((mid, qos)))

    def count(self, topic: str) -> None:
        parsed = self.platform.topics.parse(topic)
        metrics.report_received(parsed[1] if parsed else "other")

    def quiet(self, seconds: float) -> bool:
        """No device message for `seconds`."""
        return time.monotonic() - self.last_message >= seconds

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, rc: Any = None,
                    props: Any = None) -> None:
        on_ack = self.client.on_acks.pop(mid, None)
        if on_ack is not None:
            metrics.notice_sent()
            try:
                on_ack()
            except Exception:
                log.exception("recording a notice's acknowledgement failed")

    def publish(self, topic: str, payload: bytes,
                on_ack: Callable[[], None] | None = None) -> None:
        """Queue a QoS 1 message; `on_ack()` runs once the broker acknowledged it."""
        self.client.outbox.append((topic, payload, on_ack))

    def _run(self) -> None:
        try:
            self.client.loop_forever(timeout=0.05, retry_first_connection=True)
        except Exception:
            log.exception("MQTT network thread failed")

    def start(self) -> None:
        self.client.connect_async(self.url.host, self.url.port, keepalive=30)
        self.thread.start()

    def stop(self) -> None:
        if self.share is not None and self.connected.is_set():
            self.share.leave(self.client, self.client_id, self.quiet)
        self.stopping = True
        self.client.outbox.append(None)
        self.thread.join(3)
        if self.thread.is_alive():  # broker unreachable: stop the reconnect loop
            self.client._thread_terminate = True
            self.thread.join(6)
