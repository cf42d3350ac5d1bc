"""`fota platform serve`: embedded broker (amqtt) or an external one, the MQTT side of the
platform (paho-mqtt), the HTTP server, and the clock that drives the task rules.

Programmatic use: `run_service(options)` runs in the foreground until SIGINT/SIGTERM;
`process.start_platform(data_dir, ...)` runs it in a child process.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import json
import logging
import os
import secrets
import signal
import socket
import ssl
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from aiohttp import web

from . import metrics
from .api import make_app
from .broker import Identities, Limits, bound_port, start_embedded_broker
from .core import Platform
from .lograte import flush_all
from .mqttlink import BrokerURL, MqttLink, parse_broker_url
from .mqttshare import check_group
from .netguard import ConnectionGuard, GuardedSite, caps_for, fd_budget, quiet_loop_errors
from .options import ServiceOptions
from .store_sql import is_postgres
from .validate import PlatformError, check_public_url

log = logging.getLogger("fota.platform")
SHUTDOWN_GRACE = 3.0  # seconds requests in progress may take to finish at a stop


def _admin_token(data_dir: Path) -> str:
    path = data_dir / "admin.token"
    if path.exists():
        token = path.read_text().strip()
        if token:
            return token
    token = secrets.token_urlsafe(24)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.replace(tmp, path)
    return token


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _broker_identities(opts: ServiceOptions, data_dir: Path) -> Identities:
    """Who may log in to the embedded broker (see broker.py), with a warning when anyone may."""
    where = f"{opts.host}:{opts.mqtt_port or '(free port)'}"
    auth = Path(opts.broker_auth) if opts.broker_auth else None
    if auth is None and not opts.allow_anonymous and not _loopback(opts.host):
        auth = data_dir / "broker"
        if not (auth / "credentials.json").exists():
            from .mosquitto import generate

            generate(auth, [])
    if auth is None:
        if _loopback(opts.host):
            log.warning("embedded broker on %s accepts any local client without a password "
                        "(every local user can read notices and forge reports); give "
                        "--broker-auth DIR for per-device logins", where)
        else:
            log.warning("!!! embedded broker on %s accepts ANYONE WITHOUT A PASSWORD "
                        "(--allow-anonymous): whoever reaches it reads every notice and its "
                        "download token and can forge any device's reports !!!", where)
        return Identities(opts.client_id, secrets.token_urlsafe(18), anonymous=True)
    try:
        creds = json.loads((auth / "credentials.json").read_text())
        platform_user = creds["platform"]["username"]
        platform_password = creds["platform"]["password"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PlatformError(f"broker logins in {auth}: no platform user in credentials.json "
                            f"({exc!r}); write them with `fota platform mosquitto-config "
                            f"--out {auth}`") from None
    if not (auth / "passwd").exists():
        raise PlatformError(f"broker logins in {auth}: no passwd file")
    log.info("embedded broker on %s: devices log in with their id and the password in %s "
             "(add devices: fota platform mosquitto-config --out %s --device ID)",
             where, auth / "credentials.json", auth)
    return Identities(platform_user, platform_password, auth / "passwd")


async def serve(opts: ServiceOptions, stop: asyncio.Event | None = None) -> None:
    """Run until `stop` is set (or SIGINT/SIGTERM when running in the main thread)."""
    data_dir = Path(opts.data_dir)
    check_public_url(opts.public_url)
    if opts.broker and (opts.broker_auth or opts.allow_anonymous):
        raise PlatformError("--broker-auth and --allow-anonymous are for the embedded broker; "
                            "an external broker has its own logins (mosquitto-config)")
    share_group = getattr(opts.settings, "share_group", None)
    if share_group and not opts.broker:
        raise PlatformError(f"share group {share_group!r}: several instances need an external "
                            "broker with MQTT shared subscriptions (--broker mqtt://..., e.g. "
                            "mosquitto or EMQX); the embedded broker has none (one instance on "
                            "it: --share-group '')")
    if share_group:
        check_group(share_group)
    metrics.set_instance(getattr(opts, "instance_id", None))
    os.umask(0o077)  # everything the service writes is the owner's only
    # Opening the platform takes DIR's lock: a second service on DIR is refused here, naming
    # the running one, before any of its files is touched.
    platform = Platform(data_dir, opts.settings, holder="fota platform serve")
    info_path = data_dir / "service.json"
    info_path.unlink(missing_ok=True)  # left by a service that was killed: we hold the lock
    try:
        if is_postgres(opts.settings.db):  # instances serve each other's packages
            platform.packages.check_shared_folder()
        await _serve(opts, stop, platform, data_dir, info_path)
    finally:
        platform.close()
        flush_all(final=True)


async def _serve(opts: ServiceOptions, stop: asyncio.Event | None, platform: Platform,
                 data_dir: Path, info_path: Path) -> None:
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    quiet_loop_errors(loop)
    caps = caps_for(fd_budget(), http_per_address=opts.max_per_address)
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (RuntimeError, ValueError):
            pass  # not the main thread

    # HTTP socket first: its port goes into the notices' url.
    sock = socket.socket(socket.AF_INET6 if ":" in opts.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((opts.host, opts.http_port))
    except OSError as exc:  # name the port, as the broker's error does (newcomer review)
        sock.close()
        if exc.errno in (errno.EADDRINUSE, errno.EACCES):
            hint = "choose another with --http-port, or stop what uses it"
        else:  # no such host or address here: the port is not what is wrong
            hint = "give --host an address of this machine, e.g. 127.0.0.1 or 0.0.0.0"
        raise OSError(exc.errno, f"HTTP port {opts.host}:{opts.http_port}: {exc.strerror}"
                      f" ({hint})") from exc
    http_port = sock.getsockname()[1]
    scheme = "https" if opts.tls_cert else "http"
    local = "127.0.0.1" if opts.host in ("0.0.0.0", "::", "") else opts.host
    public = (opts.public_url or f"{scheme}://{local}:{http_port}").rstrip("/")
    settings = opts.settings
    settings.file_base = public + "/file/upgrade"

    broker = None
    if opts.broker:
        url = parse_broker_url(opts.broker)
    else:
        mqtt_port = opts.mqtt_port   # 0: the system picks a free port, read back below
        try:
            ids = _broker_identities(opts, data_dir)
            limits = Limits(connect_timeout=opts.connect_timeout, max_connections=caps.mqtt_total)
            broker = await start_embedded_broker(opts.host, mqtt_port, ids, limits,
                                                 settings.topic_prefix)
            mqtt_port = bound_port(broker)
        except Exception as exc:
            sock.close()
            raise PlatformError(f"embedded broker on {opts.host}:{mqtt_port}: {exc}") from None
        url = BrokerURL("mqtt", local, mqtt_port, ids.platform_user, ids.platform_password)

    link = MqttLink(url, platform, opts.client_id, opts.ca, opts.insecure,
                    share_group=getattr(settings, "share_group", None) or None,
                    instance=metrics.instance())
    platform.tasks.attach_link(link.publish, link.connected.is_set)
    admin_token = _admin_token(data_dir)
    # a download whose client reads nothing for four idle timeouts (60 s) is reset
    app = make_app(platform, admin_token, stall_timeout=4 * opts.idle_timeout)
    metrics.add_routes(app, admin_token)  # GET /metrics (Prometheus), download counters
    # keepalive_timeout also closes a connection that never sends a whole request.
    # At a stop, requests still in progress (a client half-way through an upload) get
    # SHUTDOWN_GRACE seconds before they are cancelled (aiohttp's default: 60); downloads
    # are cut off at once (fileserver.py), console event streams end (console/routes.py).
    runner = web.AppRunner(app, access_log=None, handle_signals=False,
                           keepalive_timeout=opts.idle_timeout, shutdown_timeout=SHUTDOWN_GRACE)
    await runner.setup()
    ssl_ctx = None
    if opts.tls_cert:
        ssl_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_ctx.load_cert_chain(opts.tls_cert, opts.tls_key)
    # A fleet connects at once: the default backlog (128) drops SYNs, costing 1 s retries.
    guard = ConnectionGuard(caps.http_total, caps.http_per_address)
    site = GuardedSite(runner, sock, guard, ssl_context=ssl_ctx, backlog=1024)
    await site.start()
    link.start()
    # Up to 15 s for the broker's first answer; SIGTERM meanwhile ends the wait (a thread
    # blocked in it would hold up the stop: asyncio.run waits for its executor's threads).
    answer_by = loop.time() + 15
    while not link.answered.is_set() and not stop.is_set() and loop.time() < answer_by:
        await asyncio.sleep(0.05)
    if link.refused and not link.connected.is_set():  # wrong or missing credentials
        link.stop()
        await runner.cleanup()
        if broker is not None:
            await broker.shutdown()
        raise PlatformError(f"broker {url.public()} refused the platform: {link.refused}"
                            " (check the user and password in --broker)")
    if not link.connected.is_set():
        log.warning("broker %s not reachable yet (%s); the platform keeps trying",
                    url.public(), link.why())
    info = {
        "api": f"{scheme}://{local}:{http_port}",
        "admin_token": admin_token,
        "broker": url.public(),
        "embedded_broker": broker is not None,
        "file_base": settings.file_base,
        "topic_prefix": settings.topic_prefix,
        "pid": os.getpid(),
        "instance": metrics.instance(),
        "mqtt_client_id": link.client_id,
    }
    if opts.tls_cert:
        info["tls_cert"] = str(Path(opts.tls_cert).resolve())
    if not stop.is_set():  # not announced when stopped while starting
        _write_json_atomic(info_path, info)
        log.info("platform ready: api %s, broker %s", info["api"], info["broker"])

    # The clock's own thread: request work in the default executor (package hashing,
    # deltas, TLS file reads) never makes the task notices wait for a free thread.
    ticker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fota-clock")

    async def clock() -> None:
        while not stop.is_set():
            try:
                await loop.run_in_executor(ticker, platform.tick)
            except Exception:
                log.exception("tick failed")
            flush_all()
            try:
                await asyncio.wait_for(stop.wait(), opts.tick)
            except asyncio.TimeoutError:
                pass

    try:
        await clock()
    finally:
        # A tick is awaited, unless the serve task itself was cancelled mid-tick: then its
        # thread is waited for (one tick at most) before the link and store are closed.
        ticker.shutdown(wait=True)
        log.info("platform stopping")
        info_path.unlink(missing_ok=True)
        link.stop()
        await runner.cleanup()
        if broker is not None:
            await broker.shutdown()  # FotaBroker.shutdown: ends the clients' input first


def run_service(opts: ServiceOptions) -> None:
    """Foreground: returns after SIGINT/SIGTERM and a clean shutdown."""
    asyncio.run(serve(opts))


