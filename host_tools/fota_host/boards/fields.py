"""What a device config may hold, checked on the host the way the platform and the board
will check it, with messages that say what to type (`fota device provision` flags) and
each board's limits (`fota device provision --board`, `fota deploy`).

`FieldError` messages name command-line flags; `check_board` names config keys (it reads
a config file).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import urlparse

# The device's own rule (firmware/fota/config.py): a watchdog is off (0) or at least 4 s,
# since the agent feeds it about once a second. The largest value is each board's
# (boards/chips.py: machine.WDT refuses more, e.g. 8.388 s on the Pico W's RP2040).
WDT_MIN_S = 4
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                   r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?")
_PRINTABLE = re.compile(r"[^\x00-\x1f\x7f]+")


class FieldError(ValueError):
    pass


def broker_host(value: str) -> str:
    """A host name or an IP address; a URL or HOST:PORT is refused with what to type."""
    text = value.strip()
    if "://" in text:
        u = urlparse(text)
        try:
            port = u.port
        except ValueError:
            port = None
        flags = f"--broker-host {u.hostname or 'HOST'}"
        if port:
            flags += f" --broker-port {port}"
        if u.scheme == "mqtts":
            flags += " --tls --ca CA_FILE"
        raise FieldError(f"--broker-host takes a host name or address, not a URL: for "
                         f"{value} give {flags}")
    if text.count(":") == 1:
        host, port_text = text.split(":")
        raise FieldError(f"--broker-host takes no port: give --broker-host {host} "
                         f"--broker-port {port_text}")
    try:
        ipaddress.ip_address(text.strip("[]"))
        return text.strip("[]")
    except ValueError:
        pass
    if len(text) > 253 or not _HOST.fullmatch(text):
        raise FieldError(f"--broker-host {value!r} is not a host name or IP address (letters, "
                         "digits, '-' and '.', e.g. 192.168.1.10 or broker.lan)")
    return text


def topic_prefix(value: str) -> str:
    if value and (any(c in value for c in "+#\x00") or value.endswith("/")
                  or not _PRINTABLE.fullmatch(value)):
        raise FieldError(f"--topic-prefix {value!r}: an MQTT topic without + # or control "
                         "characters and no trailing / (e.g. devices/dev-1), or \"\" for "
                         "CTWing's literal /ota/... topics")
    return value


def text_field(flag: str, value: str, low: int, high: int, what: str) -> str:
    size = len(value.encode())
    if not low <= size <= high or not _PRINTABLE.fullmatch(value or "x"):
        raise FieldError(f"{flag} {value!r}: {what}")
    return value


def _wdt_limits() -> dict[str, tuple[str, float]]:
    from .chips import BOARDS

    return {name: (b.title, b.wdt_max_s) for name, b in BOARDS.items()}


def wdt(value: float | None, board: str | None) -> None:
    """A watchdog the device and the board accept (0: off)."""
    if not value:
        return
    if value < WDT_MIN_S:
        raise FieldError(f"--wdt {value:g}: 0 (no watchdog) or at least {WDT_MIN_S} seconds "
                         "(the agent feeds it about once a second)")
    limits = _wdt_limits()
    if board is None:
        over = sorted((lim, title) for title, lim in limits.values() if value > lim)
        if over:
            names = " and ".join(title for _, title in over)
            raise FieldError(f"--wdt {value:g} is above the watchdog limit of the {names} "
                             f"({over[0][0]} s): give --board with the board this config is "
                             f"for (e.g. --board esp32), or --wdt {int(over[0][0])} or less")
        return
    title, limit = limits[board]
    if value > limit:
        raise FieldError(f"--wdt {value:g} is above the {title} watchdog's limit of {limit} s "
                         f"(machine.WDT refuses it): give --wdt {int(limit)} or less")


def check_provision(*, device: str, host: str, tls: bool, ca: Any, topic: str | None,
                    module: str | None, wifi_ssid: str | None, wifi_password: str | None,
                    wdt_s: float | None, board: str | None) -> str:
    """Every `fota device provision` field; returns the broker host to store."""
    from ..platform.validate import PlatformError, check_device_id

    try:
        check_device_id(device)
    except PlatformError as exc:
        raise FieldError(f"--id: {exc}") from None
    host = broker_host(host)
    if tls and not ca:
        raise FieldError("--tls needs --ca CA_FILE: the CA certificate that signed the "
                         "broker's certificate (the device checks the broker with it)")
    if topic is not None:
        topic_prefix(topic)
    if module is not None:
        text_field("--module", module, 1, 64, "1 to 64 printable characters (CTWing's module "
                   "name, e.g. MCU)")
    if wifi_password is not None and wifi_ssid is None:
        raise FieldError("--wifi-password needs --wifi-ssid")
    if wifi_ssid is not None:
        text_field("--wifi-ssid", wifi_ssid, 1, 32, "1 to 32 bytes (Wi-Fi network names are "
                   "at most 32 bytes)")
    if wifi_password:
        text_field("--wifi-password", wifi_password, 8, 63, "WPA passwords are 8 to 63 "
                   "characters (leave it out for an open network)")
    wdt(wdt_s, board)
    return host


def check_board(cfg: dict[str, Any], board: str, source: str = "the config") -> None:
    """A validated config against the board's limits (config keys in the message)."""
    title, limit = _wdt_limits()[board]
    value = cfg.get("wdt_s") or 0
    if value > limit:
        raise FieldError(f"wdt_s {value:g} in {source} is above the {title} watchdog's limit "
                         f"of {limit} s (machine.WDT refuses more; the agent would cut it down): "
                         f"set wdt_s to {int(limit)} or less (fota device provision --wdt)")
