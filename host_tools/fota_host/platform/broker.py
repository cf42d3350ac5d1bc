"""The embedded MQTT broker (amqtt, pure Python): what `serve` runs without `--broker`.

Anonymous, no ACL: for a desk or CI. For a fleet use mosquitto (see `mosquitto.py`).
"""

from __future__ import annotations

import logging
import socket
from typing import Any


async def start_embedded_broker(host: str, port: int) -> Any:
    from amqtt.broker import Broker

    for name in ("amqtt", "transitions"):
        logging.getLogger(name).setLevel(logging.WARNING)
    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}",
                                  "max_connections": 5000}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin":
                    {"allow_anonymous": True}},
    }
    broker = Broker(config)
    quiet = logging.getLogger("amqtt.broker")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # a busy port is reported by the caller, in one line
    try:
        await broker.start()
    finally:
        quiet.setLevel(level)
    _deepen_backlog(broker)
    return broker


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
