"""The embedded MQTT broker (amqtt, pure Python): what `serve` runs without `--broker`.

Who may connect (`Identities`):
- the platform, always with a user name and a password of its own (a fresh one per run
  unless the credentials folder names one): no device can take its client id;
- with a credentials folder (`fota platform mosquitto-config --out DIR`: DIR/passwd and
  DIR/credentials.json): each device logs in with its id as user name and the password
  issued there, and reaches only its own topics, as with the generated mosquitto setup;
- without one (loopback only, or `allow_anonymous`): any client, with no user name.

A client's id is its user name (mosquitto's `use_username_as_clientid`), set before the
broker looks up or replaces a session, so a client cannot take over anyone else's
connection or session. Connections that send no CONNECT in time are closed, each address
may hold only a few such connections, and there is a cap on all connections.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

from .ctwing import TopicMap
from .lograte import LogRate
from .mosquitto import check_password, read_passwd
from .validate import same_secret

log = logging.getLogger("fota.platform.broker")
_rate = LogRate(log)
PLATFORM, DEVICE, ANONYMOUS = "platform", "device", "anonymous"


class Identities:
    """The platform's own login and, when given, the devices' password file."""

    def __init__(self, platform_user: str, platform_password: str,
                 passwd: Path | None = None, anonymous: bool = False) -> None:
        self.platform_user = platform_user
        self.platform_password = platform_password
        self.passwd = passwd
        self.anonymous = anonymous
        self._users: dict[str, str] = {}
        self._stamp: tuple[int, int] | None = None

    def _devices(self) -> dict[str, str]:
        """The password file, read again when it changed (new devices need no restart)."""
        if self.passwd is None:
            return {}
        try:
            st = self.passwd.stat()
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp != self._stamp:
                self._users, self._stamp = read_passwd(self.passwd), stamp
        except OSError as exc:
            _rate.log(logging.ERROR, "passwd", "broker password file %s: %s", self.passwd, exc)
        return self._users

    def role(self, username: str | None, password: str | None) -> str | None:
        """PLATFORM, DEVICE or ANONYMOUS for an accepted login, None for a refused one."""
        if username == self.platform_user:
            ok = same_secret(password, self.platform_password)
            return PLATFORM if ok else None
        if not username:
            return ANONYMOUS if self.anonymous else None
        stored = self._devices().get(username)
        if stored is not None and check_password(password or "", stored):
            return DEVICE
        return ANONYMOUS if self.anonymous and self.passwd is None else None


class PacketTooLarge(Exception):
    pass


class _CappedReader:
    """The connection's reader with a cap on one read: amqtt reads a packet's body with
    one `readexactly(remaining length)`, so a client announcing 256 MB would make the
    broker buffer it. Over the cap the connection ends (amqtt's reader loop stops on an
    exception it does not know)."""

    def __init__(self, reader: asyncio.StreamReader, cap: int, addr: str) -> None:
        self.reader = reader
        self.cap = cap
        self.addr = addr

    async def read(self, n: int = -1) -> bytes:
        return await self.reader.read(self.cap if n < 0 or n > self.cap else n)

    async def readexactly(self, n: int) -> bytes:
        if n > self.cap:
            _rate.log(logging.WARNING, self.addr, "MQTT connection from %s closed: a packet of "
                      "%d bytes (at most %d)", self.addr, n, self.cap)
            raise PacketTooLarge(n)
        return await self.reader.readexactly(n)

    def feed_eof(self) -> None:
        self.reader.feed_eof()

    def at_eof(self) -> bool:
        return self.reader.at_eof()


@dataclass
class Limits:
    connect_timeout: float = 10.0  # seconds from accept to CONNECT
    max_packet: int = 256 * 1024  # bytes in one MQTT packet (device messages are < 4 KiB)
    max_connections: int = 5000  # in total
    max_pending_per_address: int = 256  # connections without CONNECT yet, per address


class _Subscriptions(dict):
    """amqtt's topic filter -> subscribers table, iterated over a snapshot.

    Workaround: amqtt 0.12.1's `Broker._run_broadcast` loops over `_subscriptions.items()`
    and awaits inside the loop; a client subscribing meanwhile raised "dictionary changed
    size during iteration" and the message skipped the later subscribers."""

    def items(self):  # type: ignore[override]
        return list(super().items())


class FotaBroker(Broker):
    """amqtt's broker with identities bound to client ids and connection limits."""

    def __init__(self, config: dict[str, Any], identities: Identities, limits: Limits) -> None:
        super().__init__(config)
        self._subscriptions = _Subscriptions(self._subscriptions)
        self.identities = identities
        self.limits = limits
        self.open = 0
        self.pending: dict[str, int] = {}  # address -> connections without CONNECT yet
        self.waiting: set[tuple[str, int]] = set()

    async def stream_connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                               listener_name: str) -> None:
        peer = writer.get_extra_info("peername") or ("?", 0)
        addr, key = str(peer[0]), (str(peer[0]), int(peer[1]))
        if self.open >= self.limits.max_connections:
            _rate.log(logging.WARNING, addr, "MQTT connection from %s refused: %d connections "
                      "open (the cap)", addr, self.open)
            writer.transport.abort()
            return
        if self.pending.get(addr, 0) >= self.limits.max_pending_per_address:
            _rate.log(logging.WARNING, addr, "MQTT connection from %s refused: %d connections "
                      "from it still without CONNECT", addr, self.pending[addr])
            writer.transport.abort()
            return
        self.open += 1
        self.pending[addr] = self.pending.get(addr, 0) + 1
        self.waiting.add(key)
        try:
            capped: Any = _CappedReader(reader, self.limits.max_packet, addr)
            await super().stream_connected(capped, writer, listener_name)
        except Exception as exc:  # a hostile client must not print a traceback
            _rate.log(logging.WARNING, addr, "MQTT connection from %s failed: %r", addr, exc)
            writer.transport.abort()
        except asyncio.CancelledError:
            # Shutdown cancels the connection tasks. Python 3.11's asyncio.streams callback
            # calls task.exception() on a cancelled client_connected_cb task, which raises
            # and logs a traceback per open connection (fixed in 3.12): end it plainly.
            writer.transport.abort()
        finally:
            self.open -= 1
            self._connected(key)

    async def _handle_disconnect(self, client_session: Session, handler: Any,
                                 disconnect_waiter: Any) -> None:
        """Deliver what the client sent before it left, then amqtt's disconnect.

        Workaround: amqtt 0.12.1 acknowledges a QoS 1 PUBLISH on receipt (PUBACK) and
        queues it for the client's loop, which stops at the disconnect: what was still queued
        was dropped though acknowledged. A device that reports and then reboots at once lost
        its last reports (a burst of 1000 from one client lost about half)."""
        queue = client_session.delivered_message_queue
        while not queue.empty():
            sent = asyncio.get_running_loop().create_future()
            sent.set_result(queue.get_nowait())
            if not await self._handle_message_delivery(client_session, handler, sent):
                break
        await super()._handle_disconnect(client_session, handler, disconnect_waiter)

    async def shutdown(self) -> None:
        """Stop taking connections and end each client connection's input, then amqtt's
        shutdown. Workaround: amqtt (0.12.1) stops a client's reader loop by cancelling it,
        and Python 3.11's asyncio.wait_for drops a cancel that lands as a packet arrives: a
        device sending at that moment kept its reader loop, and the stop waiting for it,
        going for good (and a device reconnecting meanwhile started a new one). A reader
        that sees the end of its input ends its loop whatever happened to the cancel; the
        connection stays writable until amqtt closes it (no writes to a closed socket)."""
        for server in self._servers.values():
            if getattr(server, "instance", None) is not None:
                server.instance.close()
        for _, handler in list(self._sessions.values()):
            stream = getattr(getattr(handler, "writer", None), "_writer", None)
            transport = getattr(stream, "transport", None)
            if transport is None or transport.is_closing() or handler.reader is None:
                continue
            transport.pause_reading()
            handler.reader.feed_eof()
        await super().shutdown()

    def _connected(self, key: tuple[str, int]) -> None:
        """The connection from `key` is no longer waiting for its CONNECT."""
        if key not in self.waiting:
            return
        self.waiting.discard(key)
        left = self.pending.get(key[0], 0) - 1
        if left > 0:
            self.pending[key[0]] = left
        else:
            self.pending.pop(key[0], None)

    async def _handle_client_session(self, reader: Any, writer: Any, client_session: Session,
                                     *args: Any) -> None:
        try:
            await super()._handle_client_session(reader, writer, client_session, *args)
        finally:
            if getattr(client_session, "fota_role", None) is None:
                # amqtt keeps a refused client's session for good: one per attempt
                await self._delete_session(client_session.client_id)

    async def _initialize_client_session(self, reader: Any, writer: Any, remote_address: str,
                                         remote_port: int) -> tuple[BrokerProtocolHandler,
                                                                    Session]:
        try:
            handler, session = await asyncio.wait_for(BrokerProtocolHandler.init_from_connect(
                reader, writer, self.plugins_manager), self.limits.connect_timeout)
        except asyncio.TimeoutError:
            await writer.close()
            _rate.log(logging.INFO, remote_address, "MQTT connection from %s closed: no CONNECT "
                      "within %.0f s", remote_address, self.limits.connect_timeout)
            raise NoDataError("no CONNECT in time") from None
        except (AMQTTError, MQTTError, NoDataError, ValueError, UnicodeError) as exc:
            await writer.close()
            _rate.log(logging.INFO, remote_address, "MQTT connection from %s closed: bad CONNECT "
                      "(%s)", remote_address, exc)
            raise AMQTTError(str(exc)) from None
        self._connected((str(remote_address), int(remote_port)))
        role = self.identities.role(session.username, session.password)
        if role in (PLATFORM, DEVICE):
            session.client_id = session.username  # bound to the identity
        elif role is None or session.client_id == self.identities.platform_user:
            # Refused: an id of its own, so no session is looked up, replaced or taken over.
            role = None
            session.client_id = f"refused/{secrets.token_hex(8)}"
            session.clean_session = True
            _rate.log(logging.WARNING, remote_address, "MQTT login refused from %s (user %.64r)",
                      remote_address, session.username)
        session.fota_role = role  # type: ignore[attr-defined]
        if session.clean_session:
            if session.client_id:
                await self._delete_session(session.client_id)
            else:
                session.client_id = f"anonymous/{secrets.token_hex(8)}"
            session.parent = 0
            return handler, session
        kept = self.sessions.get(session.client_id)
        if kept is None:
            session.parent = 0
            return handler, session
        old: Session = kept[0]
        for name in ("will_flag", "will_message", "will_topic", "will_qos", "keep_alive",
                     "username", "password", "fota_role"):
            setattr(old, name, getattr(session, name))
        old.parent = 1
        return handler, old


class FotaAuth(BaseAuthPlugin):
    """Accepts the logins `FotaBroker` recognised (the role it stored on the session)."""

    @dataclass
    class Config:
        pass

    async def authenticate(self, *, session: Session) -> bool | None:
        role = getattr(session, "fota_role", None)
        session.is_anonymous = role == ANONYMOUS
        return role is not None


class FotaTopics(BaseTopicPlugin):
    """A device publishes only its own inform and progress and reads only its own notices;
    the platform (and, without credentials, everyone) reaches everything."""

    @dataclass
    class Config:
        prefix: str = "devices/{device}"

    async def topic_filtering(self, *, session: Session | None = None, topic: str | None = None,
                              action: Action | None = None) -> bool | None:
        role = getattr(session, "fota_role", None)
        if role in (PLATFORM, ANONYMOUS):
            return True
        if role != DEVICE or session is None or not topic:
            return False
        topics = TopicMap(self.config.prefix)
        device = session.username or ""
        if action == Action.PUBLISH:
            return topic in (topics.topic(device, "inform"), topics.topic(device, "progress"))
        return topic == topics.topic(device, "upgrade")  # SUBSCRIBE (exact) and RECEIVE


async def start_embedded_broker(host: str, port: int, identities: Identities | None = None,
                                limits: Limits | None = None,
                                prefix: str = "devices/{device}") -> FotaBroker:
    for name in ("amqtt", "transitions"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # amqtt logs one line per refused or broken connection; ours are rate-limited.
    for name in ("amqtt.broker", "amqtt.mqtt.protocol.handler"):
        logging.getLogger(name).setLevel(logging.ERROR)
    identities = identities or Identities("fota-platform", secrets.token_urlsafe(18),
                                          anonymous=True)
    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": {f"{__name__}.FotaAuth": {}, f"{__name__}.FotaTopics": {"prefix": prefix}},
    }
    broker = FotaBroker(config, identities, limits or Limits())
    quiet = logging.getLogger("amqtt.broker")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # a busy port is reported by the caller, in one line
    try:
        await broker.start()
    finally:
        quiet.setLevel(level)
    _deepen_backlog(broker)
    return broker


def bound_port(broker: Any) -> int:
    """The port the broker listens on (start it on port 0 to have the system pick a free
    one: picking a free port first and binding it later races with other programs)."""
    for server in getattr(broker, "_servers", {}).values():
        for sock in getattr(server.instance, "sockets", ()) or ():
            return int(sock.getsockname()[1])
    raise RuntimeError("the embedded broker has no listening socket")


def _deepen_backlog(broker: Any, backlog: int = 1024) -> None:
    """amqtt listens with asyncio's default backlog (100): a fleet connecting at once would
    lose SYNs and wait a second per retry. listen() again on a duplicate of the socket."""
    for server in getattr(broker, "_servers", {}).values():
        for sock in getattr(server.instance, "sockets", ()) or ():
            try:
                with socket.fromfd(sock.fileno(), sock.family, sock.type) as dup:
                    dup.listen(backlog)
            except OSError:
                pass
