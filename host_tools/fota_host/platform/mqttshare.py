"""Several platform instances on one broker: MQTT shared subscriptions, and what happens to
the device messages of an instance that dies.

Each instance subscribes to the device topics as `$share/<group>/<filter>`: the broker hands
each device message to exactly one member of the group. Members hold persistent sessions
(clean session off) under client ids of their own (`<client id>-<instance>`), so a member
that loses its connection for a moment gets what was queued for it when it comes back.

A member killed for good would keep its share: mosquitto goes on routing messages to a
disconnected persistent session (and drops the unacknowledged ones of a clean session). So
every member announces itself on a retained status topic with a last will of "lost": when an
instance dies, the broker publishes its will, and the lowest-named live member takes its
session over (connects under its client id, which makes the broker resend what was in
flight and queued), feeds those messages to its own platform, unsubscribes the dead session
from the group and clears the dead member's status. A member that stops cleanly leaves the
group itself first (unsubscribe, wait for its messages, clear its status).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import paho.mqtt.client as mqtt

from .core import Platform
from .validate import PlatformError

log = logging.getLogger("fota.platform")
_GROUP_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
QUIET = 1.5  # seconds without a message: a session taken over has given what it held
TAKEOVER_LIMIT = 300.0  # seconds one takeover may last


class Link(Protocol):
    """What a member needs of its MQTT link (mqttlink.MqttLink)."""

    platform: Platform
    client_id: str

    def new_client(self, client_id: str) -> Any:
        """A paho client with the link's broker login and TLS, acks sent by its loop."""
        ...

    def connect_args(self) -> tuple[str, int]:
        """The broker's host and port."""
        ...

    def count(self, topic: str) -> None:
        """Count a device message for /metrics."""
        ...


def check_group(group: str) -> str:
    """A share name: no `/`, `+`, `#` (MQTT 5 4.8.2), kept short and plain."""
    if not _GROUP_RE.match(group):
        raise PlatformError(f"share group must be 1-64 letters, digits, '.', '_' or '-', "
                            f"got {group!r}")
    return group


def client_name(client_id: str, instance: str) -> str:
    """This member's MQTT client id: unique per instance, usable as a topic level."""
    return re.sub(r"[^A-Za-z0-9._:-]", "_", f"{client_id}-{instance}")[:128]


class ShareGroup:
    """One member's view of the group: its filters, its status topic, the others' states."""

    def __init__(self, link: Link, group: str) -> None:
        self.link = link
        self.group = check_group(group)
        topics = link.platform.topics
        self.filters = [f"$share/{group}/{f}" for f in topics.subscriptions()]
        # Under the device topic prefix (the platform's broker login reaches it; a device's
        # ACL does not), at a level no device id can take (`_` is not a device id's start).
        base = topics.template.replace("{device}", "_fota")
        self.status_base = f"{base}/instances/{group}/"
        self.states: dict[str, str] = {}  # client id -> "up" | "lost"
        self.taking: set[str] = set()
        self._lock = threading.Lock()

    def status_topic(self, client_id: str) -> str:
        return self.status_base + client_id

    def will(self, client: mqtt.Client, client_id: str) -> None:
        client.will_set(self.status_topic(client_id),
                        json.dumps({"state": "lost"}), qos=1, retain=True)

    def subscriptions(self) -> list[tuple[str, int]]:
        return [(f, 1) for f in self.filters] + [(self.status_base + "+", 1)]

    def announce(self, client: mqtt.Client, client_id: str) -> None:
        """On each connect: this member is up (retained; its will says otherwise)."""
        client.publish(self.status_topic(client_id),
                       json.dumps({"state": "up", "at": time.time()}), qos=1, retain=True)

    def is_status(self, topic: str) -> bool:
        return topic.startswith(self.status_base)

    def on_status(self, topic: str, payload: bytes | bytearray, me: str) -> None:
        """A member's status changed (or a retained one arrived on subscribe)."""
        who = topic[len(self.status_base):]
        try:
            state = json.loads(payload).get("state") if payload else None
        except (ValueError, AttributeError, UnicodeDecodeError):
            state = None
        with self._lock:
            if state in ("up", "lost"):
                self.states[who] = state
            else:
                self.states.pop(who, None)
            if who == me:
                return
            up = sorted([w for w, s in self.states.items() if s == "up"] + [me])
            if up[0] != me:
                return  # the lowest-named live member takes the dead ones over
            lost = [w for w, s in self.states.items() if s == "lost" and w not in self.taking]
            self.taking.update(lost)
        for dead in lost:
            log.warning("platform instance %s lost its broker connection: taking its "
                        "session over", dead)
            threading.Thread(target=self._take_over, args=(dead,), name="fota-takeover",
                             daemon=True).start()

    def _take_over(self, dead: str) -> None:
        try:
            done = Takeover(self.link, self, dead).run()
            if done:
                log.info("session of %s taken over: its messages handled", dead)
        except Exception:
            log.exception("taking over the session of %s failed", dead)
        finally:
            with self._lock:
                self.taking.discard(dead)

    def leave(self, client: Any, client_id: str, quiet: Callable[[float], bool]) -> None:
        """A clean stop: out of the group, what was queued handled, status cleared."""
        client.calls.append(lambda: client.unsubscribe(self.filters + [self.status_base + "+"]))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not quiet(0.5):
            time.sleep(0.1)
        topic = self.status_topic(client_id)
        client.calls.append(lambda: client.publish(topic, b"", qos=1, retain=True))


class Takeover:
    """Connect as a dead member, handle what its session holds, leave the group for it."""

    def __init__(self, link: Link, share: ShareGroup, dead: str) -> None:
        self.link, self.share, self.dead = link, share, dead
        self.client = link.new_client(dead)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect
        self.client.on_unsubscribe = self._on_unsubscribe
        self.last = time.monotonic()
        self.unsubscribed = False
        self.ended: str | None = None  # why the connection ended early
        self.resumed = False

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any,
                    props: Any = None) -> None:
        if rc.is_failure:
            self.ended = f"refused: {rc}"
            return
        self.resumed = bool(flags.session_present)
        client.unsubscribe(self.share.filters + [self.share.status_base + "+"])

    def _on_unsubscribe(self, *args: Any) -> None:
        self.unsubscribed = True
        self.last = time.monotonic()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.last = time.monotonic()
        acks, mid, qos = self.client.acks, msg.mid, msg.qos
        ack = lambda: acks.append((mid, qos))  # noqa: E731
        if self.share.is_status(msg.topic):
            ack()
            return
        self.link.count(msg.topic)
        self.link.platform.on_message(msg.topic, msg.payload, ack)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any,
                       props: Any = None) -> None:
        if self.ended is None:
            self.ended = f"disconnected: {rc}"  # e.g. the member came back (session taken)

    def run(self) -> bool:
        c = self.client
        c.connect(*self.link.connect_args(), keepalive=30)
        start = time.monotonic()
        while self.ended is None and time.monotonic() - start < TAKEOVER_LIMIT:
            c.loop(0.1)
            if self.unsubscribed and time.monotonic() - self.last >= QUIET:
                break
        if self.ended is not None:
            log.warning("taking over %s stopped: %s", self.dead, self.ended)
            return False
        info = c.publish(self.share.status_topic(self.dead), b"", qos=1, retain=True)
        deadline = time.monotonic() + 5
        while not info.is_published() and time.monotonic() < deadline and self.ended is None:
            c.loop(0.1)
        c._send_acks()
        c.disconnect()
        c.loop(0.1)
        return True
