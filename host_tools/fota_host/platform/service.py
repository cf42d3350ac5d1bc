"""`fota platform serve`: embedded broker (amqtt) or an external one, the MQTT side of the
platform (paho-mqtt), the HTTP server, and the clock that drives the task engine.

Programmatic use:
- `run_service(options)` runs in the foreground until SIGINT/SIGTERM.
- `start_platform(data_dir, ...)` starts it in a child process and waits for
  `DIR/service.json`; the returned `PlatformProcess` stops, kills and restarts it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from aiohttp import web

from .engine import Platform, PlatformError, Settings
from .web import make_app

log = logging.getLogger("fota.platform")


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


@dataclass
class ServiceOptions:
    data_dir: Path
    broker: str | None = None  # None: embedded amqtt broker
    host: str = "127.0.0.1"
    http_port: int = 8080
    mqtt_port: int = 1883
    public_url: str | None = None  # base devices use for downloads, default http(s)://host:port
    ca: str | None = None
    insecure: bool = False
    client_id: str = "fota-platform"
    tls_cert: str | None = None
    tls_key: str | None = None
    tick: float = 0.1
    settings: Settings = field(default_factory=Settings)


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


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


def write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


class _Client(mqtt.Client):
    """paho's client with an outbox drained by its own network thread.

    The platform runs paho's `loop_forever` in a thread of its own (not `loop_start`, whose
    wake-up socket pair costs two extra system calls per received QoS 1 message), so other
    threads must not write to the socket: they queue notices here, and the network thread
    sends them after each pass of its loop (at most `timeout` later).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.outbox: deque[tuple[str, bytes] | None] = deque()

    def _loop(self, timeout: float = 1.0) -> mqtt.MQTTErrorCode:
        rc = super()._loop(timeout)
        while self.outbox:
            item = self.outbox.popleft()
            if item is None:
                self.disconnect()
                break
            self.publish(item[0], item[1], qos=1)
        return rc


class MqttLink:
    """The platform's own MQTT client: subscribes to every device's inform and progress."""

    def __init__(self, url: BrokerURL, platform: Platform, client_id: str,
                 ca: str | None, insecure: bool) -> None:
        self.platform = platform
        self.url = url
        self.connected = threading.Event()
        self.stopping = False
        # A persistent session: an external broker keeps device reports (QoS 1) while the
        # platform restarts.
        self.client = _Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                              clean_session=False)
        self.client.max_queued_messages_set(0)
        self.client.max_inflight_messages_set(100)
        if url.username:
            self.client.username_pw_set(url.username, url.password)
        if url.tls:
            self.client.tls_set(ca_certs=ca)
            if insecure:
                self.client.tls_insecure_set(True)
        self.client.reconnect_delay_set(0.2, 5)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.thread = threading.Thread(target=self._run, name="fota-mqtt", daemon=True)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any,
                    props: Any = None) -> None:
        if rc.is_failure:
            log.error("broker refused the platform: %s", rc)
            return
        client.subscribe([(t, 1) for t in self.platform.topics.subscriptions()])
        self.connected.set()
        log.info("connected to broker %s", self.url.public())

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any,
                       props: Any = None) -> None:
        self.connected.clear()
        if self.stopping:
            log.info("disconnected from broker")
        else:
            log.warning("disconnected from broker (%s); reconnecting", rc)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.platform.on_message(msg.topic, msg.payload)

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.outbox.append((topic, payload))

    def _run(self) -> None:
        try:
            self.client.loop_forever(timeout=0.05, retry_first_connection=True)
        except Exception:
            log.exception("MQTT network thread failed")

    def start(self) -> None:
        self.client.connect_async(self.url.host, self.url.port, keepalive=30)
        self.thread.start()

    def stop(self) -> None:
        self.stopping = True
        self.client.outbox.append(None)
        self.thread.join(3)
        if self.thread.is_alive():  # broker unreachable: stop the reconnect loop
            self.client._thread_terminate = True
            self.thread.join(6)


async def _start_embedded_broker(host: str, port: int) -> Any:
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
    return broker


async def serve(opts: ServiceOptions, stop: asyncio.Event | None = None) -> None:
    """Run until `stop` is set (or SIGINT/SIGTERM when running in the main thread)."""
    data_dir = Path(opts.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    info_path = data_dir / "service.json"
    info_path.unlink(missing_ok=True)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (RuntimeError, ValueError):
            pass  # not the main thread

    # HTTP socket first: its port goes into the notices' url.
    sock = socket.socket(socket.AF_INET6 if ":" in opts.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((opts.host, opts.http_port))
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
        mqtt_port = opts.mqtt_port or _free_port(opts.host)
        try:
            broker = await _start_embedded_broker(opts.host, mqtt_port)
        except Exception as exc:
            sock.close()
            raise PlatformError(f"embedded broker on {opts.host}:{mqtt_port}: {exc}") from None
        url = BrokerURL("mqtt", local, mqtt_port)

    platform = Platform(data_dir, settings)
    link = MqttLink(url, platform, opts.client_id, opts.ca, opts.insecure)
    platform.publish = link.publish
    admin_token = _admin_token(data_dir)
    app = make_app(platform, admin_token)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    ssl_ctx = None
    if opts.tls_cert:
        ssl_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_ctx.load_cert_chain(opts.tls_cert, opts.tls_key)
    # A fleet connects at once: the default backlog (128) drops SYNs, costing 1 s retries.
    site = web.SockSite(runner, sock, ssl_context=ssl_ctx, backlog=1024)
    await site.start()
    link.start()
    try:
        await asyncio.wait_for(loop.run_in_executor(None, link.connected.wait, 15), 16)
    except asyncio.TimeoutError:
        pass
    if not link.connected.is_set():
        log.warning("broker %s not reachable yet; the platform keeps trying", url.public())
    info = {
        "api": f"{scheme}://{local}:{http_port}",
        "admin_token": admin_token,
        "broker": url.public(),
        "embedded_broker": broker is not None,
        "file_base": settings.file_base,
        "topic_prefix": settings.topic_prefix,
        "pid": os.getpid(),
    }
    if opts.tls_cert:
        info["tls_cert"] = str(Path(opts.tls_cert).resolve())
    write_json_atomic(info_path, info)
    log.info("platform ready: api %s, broker %s", info["api"], info["broker"])

    async def clock() -> None:
        while not stop.is_set():
            try:
                await loop.run_in_executor(None, platform.tick)
            except Exception:
                log.exception("tick failed")
            try:
                await asyncio.wait_for(stop.wait(), opts.tick)
            except asyncio.TimeoutError:
                pass

    try:
        await clock()
    finally:
        log.info("platform stopping")
        info_path.unlink(missing_ok=True)
        link.stop()
        await runner.cleanup()
        if broker is not None:
            await broker.shutdown()
        platform.close()


def run_service(opts: ServiceOptions) -> None:
    """Foreground: returns after SIGINT/SIGTERM and a clean shutdown."""
    asyncio.run(serve(opts))


def read_service_info(data_dir: Path) -> dict[str, Any] | None:
    path = Path(data_dir) / "service.json"
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class PlatformProcess:
    """A platform running in a child process (`python -m fota_host.platform serve ...`)."""

    def __init__(self, data_dir: Path, args: list[str], timeout: float,
                 log_path: Path | None) -> None:
        self.data_dir = Path(data_dir)
        self.args = args
        self.timeout = timeout
        self.log_path = log_path or self.data_dir / "platform.log"
        self.proc: subprocess.Popen | None = None
        self.info: dict[str, Any] = {}

    @property
    def api(self) -> str:
        return self.info["api"]

    @property
    def broker(self) -> str:
        return self.info["broker"]

    @property
    def admin_token(self) -> str:
        return self.info["admin_token"]

    @property
    def file_base(self) -> str:
        return self.info["file_base"]

    def client(self) -> Any:
        from .client import ApiClient

        return ApiClient(self.info)

    def start(self) -> PlatformProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "service.json").unlink(missing_ok=True)
        logf = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fota_host.platform", "serve", "--data", str(self.data_dir),
             *self.args], stdout=logf, stderr=subprocess.STDOUT)
        logf.close()
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            info = read_service_info(self.data_dir)
            if info and info.get("pid") == self.proc.pid:
                self.info = info
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        tail = self.log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"platform did not start; log tail:\n{tail}")

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: the crash case (no clean shutdown)."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def __enter__(self) -> PlatformProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start_platform(data_dir: str | Path, *, broker: str | None = None, http_port: int = 0,
                   mqtt_port: int = 0, host: str = "127.0.0.1", extra_args: list[str] | None = None,
                   timeout: float = 30.0, log_path: Path | None = None,
                   **options: Any) -> PlatformProcess:
    """Start `fota platform serve` in a child process and wait until it is ready.

    `options` map to the serve flags: push_rate=600 → `--push-rate 600`, etc. With http_port
    or mqtt_port 0 a free port is picked (see `.info`, the parsed service.json).
    """
    args = ["--host", host, "--http-port", str(http_port)]
    if broker:
        args += ["--broker", broker]
    else:
        args += ["--mqtt-port", str(mqtt_port)]
    for key, value in options.items():
        if value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        args += [flag] if value is True else [flag, str(value)]
    args += extra_args or []
    return PlatformProcess(Path(data_dir), args, timeout, log_path).start()
