"""Generate a mosquitto configuration for a fleet: per-device credentials and an ACL so each
device reaches only its own topics (`<prefix>/ota/inform|progress` write,
`<prefix>/ota/upgrade` read), and a platform user that reaches every device's topics.

Passwords are stored in mosquitto's own PBKDF2-SHA512 format (`$7$`, as `mosquitto_passwd`
writes it), so no mosquitto tool is needed to generate the files. Re-running keeps the
passwords already issued (credentials.json) and adds new devices.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import os
import re
import secrets
from pathlib import Path
from typing import Any

from .ctwing import TopicMap
from .validate import PlatformError, check_device_id

_ITERATIONS = 101  # mosquitto_passwd's default for $7$


def mosquitto_hash(password: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, _ITERATIONS, 64)
    return f"$7${_ITERATIONS}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def check_password(password: str, stored: str) -> bool:
    """True when `password` matches a `$7$` (PBKDF2-SHA512) line part written by
    `mosquitto_hash` or mosquitto_passwd; False for any other or malformed hash."""
    parts = stored.split("$")
    if len(parts) != 5 or parts[1] != "7":
        return False
    try:
        iterations = int(parts[2])
        salt, digest = base64.b64decode(parts[3]), base64.b64decode(parts[4])
    except ValueError:
        return False
    if not 0 < iterations <= 1_000_000:
        return False
    got = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, len(digest))
    return hmac.compare_digest(got, digest)


# RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens.
_HOSTNAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")
_USER = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")


def check_bind(bind: str) -> str:
    """The listener address for mosquitto's `listener PORT ADDRESS` line: an IPv4/IPv6
    address or an RFC 1123 host name. Anything else (spaces, a newline that would add its
    own config line, `#`) raises PlatformError."""
    try:
        return str(ipaddress.ip_address(bind))
    except ValueError:
        pass
    if len(bind) <= 253 and _HOSTNAME.fullmatch(bind):
        return bind
    raise PlatformError(f"--bind {bind!r} is not an IP address or host name")


def _check_conf_text(option: str, value: str) -> None:
    """A value written on one mosquitto.conf line (a file path, the `user` account): a
    control character such as a newline would start a config line of its own."""
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise PlatformError(f"{option} {value!r} contains a control character "
                            "(a newline would add its own line to mosquitto.conf)")


def _url_host(bind: str) -> str:
    """The host part of the platform's --broker URL for a listener bound to `bind`."""
    if bind in ("0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{bind}]" if ":" in bind else bind


def read_passwd(path: Path) -> dict[str, str]:
    """user -> stored hash from a mosquitto password file."""
    users: dict[str, str] = {}
    for line in path.read_text().splitlines():
        user, sep, stored = line.strip().partition(":")
        if sep and user and not user.startswith("#"):
            users[user] = stored
    return users


def _current_user() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


def _write(path: Path, text: str, mode: int = 0o600) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def generate(out_dir: str | Path, devices: list[str], *, port: int = 1883,
             bind: str = "0.0.0.0", platform_user: str = "fota-platform",
             prefix: str = "devices/{device}", cafile: str | None = None,
             certfile: str | None = None, keyfile: str | None = None,
             run_as: str | None = None) -> dict[str, Any]:
    """Write mosquitto.conf, passwd, acl and credentials.json into out_dir.

    The files are readable by their owner only. The config's `user` line is the account
    mosquitto switches to when started as root: `run_as`, by default the user running this
    (so `mosquitto -c mosquitto.conf` works as written, as root too: mosquitto's own default,
    user `mosquitto`, cannot read the owner-only password file). As root with another
    `run_as`, the password and ACL files are given to that user.

    Returns {"config", "credentials", "platform_broker", "devices"}: `platform_broker` is the
    `--broker` URL for `fota platform serve`.
    """
    for dev in devices:
        check_device_id(dev)
    check_device_id(platform_user)
    if platform_user in devices:
        raise PlatformError(f"the platform user {platform_user!r} is also listed as a device")
    topics = TopicMap(prefix)
    if not 0 < port < 65536:
        raise PlatformError(f"bad port {port}")
    if bool(certfile) != bool(keyfile):
        raise PlatformError("give both --certfile and --keyfile for TLS")
    bind = check_bind(bind)
    if run_as is not None and not _USER.fullmatch(run_as):
        raise PlatformError(f"--run-as {run_as!r} is not a user name")
    out = Path(out_dir).resolve()
    for option, value in (("--out", str(out)), ("--certfile", certfile),
                          ("--keyfile", keyfile), ("--cafile", cafile)):
        if value:
            _check_conf_text(option, str(Path(value).resolve()))
    out.mkdir(parents=True, exist_ok=True)
    cred_path = out / "credentials.json"
    creds: dict[str, Any] = {"platform": {}, "devices": {}}
    if cred_path.exists():
        try:
            creds = json.loads(cred_path.read_text())
        except ValueError:
            raise PlatformError(f"{cred_path} is not JSON; remove it to start over") from None
    platform = creds.setdefault("platform", {})
    if platform.get("username") != platform_user:
        platform.update(username=platform_user, password=secrets.token_urlsafe(18))
    known: dict[str, str] = creds.setdefault("devices", {})
    for dev in devices:
        known.setdefault(dev, secrets.token_urlsafe(12))

    lines = [f"{platform['username']}:{mosquitto_hash(platform['password'])}"]
    lines += [f"{dev}:{mosquitto_hash(pw)}" for dev, pw in sorted(known.items())]
    base_all = prefix.replace("{device}", "+").split("+")[0]
    own = prefix.replace("{device}", "%u")
    acl = [
        "# Generated by `fota platform mosquitto-config`.",
        "# The platform reaches every device's topics.",
        f"user {platform['username']}",
        f"topic readwrite {base_all}#",
        "",
        "# Each device (username = device id) reaches only its own topics.",
        f"pattern write {own}/ota/inform",
        f"pattern write {own}/ota/progress",
        f"pattern read {own}/ota/upgrade",
        "",
    ]
    conf = [
        "# Generated by `fota platform mosquitto-config`.",
        f"# Run: mosquitto -c {out / 'mosquitto.conf'}",
        "per_listener_settings false",
        f"user {run_as or _current_user()}",
        f"listener {port} {bind}",
        "# A client's id is its user name (a listener setting): nobody can log in under the",
        "# platform's or another device's client id and take over its connection or session.",
        "use_username_as_clientid true",
    ]
    if certfile:
        conf += [f"certfile {Path(certfile).resolve()}", f"keyfile {Path(keyfile).resolve()}"]
        if cafile:
            conf.append(f"cafile {Path(cafile).resolve()}")
    conf += [
        "allow_anonymous false",
        f"password_file {out / 'passwd'}",
        f"acl_file {out / 'acl'}",
        "max_queued_messages 10000",
        "# Device messages are a few hundred bytes: a client announcing a huge packet is cut off.",
        "max_packet_size 262144",
        "",
    ]
    _write(out / "passwd", "\n".join(lines) + "\n")
    _write(out / "acl", "\n".join(acl))
    if run_as and os.geteuid() == 0 and run_as != _current_user():
        import pwd

        try:
            account = pwd.getpwnam(run_as)
        except KeyError:
            raise PlatformError(f"--run-as {run_as}: no such user on this machine") from None
        for name in ("passwd", "acl"):
            os.chown(out / name, account.pw_uid, account.pw_gid)
    _write(out / "mosquitto.conf", "\n".join(conf), 0o644)
    _write(cred_path, json.dumps(creds, indent=2) + "\n")
    scheme = "mqtts" if certfile else "mqtt"
    host = _url_host(bind)
    user = platform["username"]
    return {
        "config": str(out / "mosquitto.conf"),
        "credentials": str(cred_path),
        "platform_broker": f"{scheme}://{user}:{platform['password']}@{host}:{port}",
        "devices": sorted(known),
        "topics": {"inform": topics.topic("<device>", "inform"),
                   "upgrade": topics.topic("<device>", "upgrade")},
    }
