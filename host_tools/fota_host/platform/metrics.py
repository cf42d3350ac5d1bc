"""`GET /metrics`: the platform's counters and gauges in Prometheus' text format
(prometheus_client), every series labelled with the instance that serves it.

Counters live in this process (one platform service per process): notices the broker
acknowledged, device reports handled by kind, rejected messages, downloads started and
completed and the bytes of the completed ones. Gauges are read from the store at each scrape:
sub-tasks per task and state (the same figures from every instance sharing a database), and
whether this instance's broker link is up.

Who may scrape: `Authorization: Bearer <token>` with the data folder's `metrics.token` (made
at the first start, read-only: it opens nothing but /metrics) or the admin token. A
Prometheus job reads it with `authorization: {credentials_file: ...}`; instances behind one
job share the token by copying one `metrics.token` into each instance's data folder.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .core import Platform
from .fileserver import PLATFORM_KEY
from .store import StorageError
from .validate import same_secret

_TOKEN_KEY = web.AppKey("metrics_token", str)
_ADMIN_KEY = web.AppKey("metrics_admin_token", str)
_DOWNLOAD_PATH = "/file/upgrade"

_registry = CollectorRegistry(auto_describe=True)
_instance = {"id": ""}
_lock = threading.Lock()

NOTICES = Counter("fota_notices_sent", "Upgrade notices the broker acknowledged (QoS 1).",
                  ["instance"], registry=_registry)
REPORTS = Counter("fota_reports", "Device messages received, by kind (inform, progress).",
                  ["instance", "kind"], registry=_registry)
DOWNLOADS = Counter("fota_downloads_started", "Downloads the file server began to send "
                    "(token accepted; a resumed download with Range counts again).",
                    ["instance"], registry=_registry)
COMPLETED = Counter("fota_downloads_completed", "Downloads sent to their last byte.",
                    ["instance"], registry=_registry)
REFUSED = Counter("fota_downloads_refused", "Download requests refused (403/404/416).",
                  ["instance"], registry=_registry)
BYTES = Counter("fota_download_bytes", "Bytes of the completed downloads (whole files and "
                "ranges).", ["instance"], registry=_registry)


def default_instance() -> str:
    """`hostname:pid`: unique among the instances sharing a database and a broker."""
    return f"{socket.gethostname()}:{os.getpid()}"


def set_instance(instance: str | None) -> str:
    """The label every series of this process carries; returns it."""
    with _lock:
        _instance["id"] = instance or default_instance()
        return _instance["id"]


def instance() -> str:
    return _instance["id"] or set_instance(None)


def notice_sent() -> None:
    NOTICES.labels(instance()).inc()


def report_received(kind: str) -> None:
    REPORTS.labels(instance(), kind).inc()


class _StoreCollector(Collector):
    """What the store and the platform object know, read at scrape time."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform

    def collect(self) -> Iterator[Metric]:
        me = instance()
        p = self.platform
        rejected = CounterMetricFamily("fota_reports_rejected", "Device messages dropped "
                                       "(malformed, unknown task, another device's task).",
                                       labels=["instance"])
        rejected.add_metric([me], p.reports.dropped)
        yield rejected
        accepted = CounterMetricFamily("fota_reports_applied", "Device messages applied to "
                                       "their sub-task or device.", labels=["instance"])
        accepted.add_metric([me], p.reports.accepted)
        yield accepted
        link = GaugeMetricFamily("fota_broker_connected", "1 while this instance's MQTT link "
                                 "is up.", labels=["instance"])
        link.add_metric([me], 1.0 if p.tasks.link_up() else 0.0)
        yield link
        states = GaugeMetricFamily("fota_subtasks", "Sub-tasks per task and state (read from "
                                   "the store: every instance on one database shows the same).",
                                   labels=["instance", "task", "state"])
        up = GaugeMetricFamily("fota_store_up", "1 when this instance read the store for this "
                               "scrape, 0 while it can't (database down or restarting: the "
                               "sub-task gauges are left out until it is back).",
                               labels=["instance"])
        try:
            with p.store.lock:
                counts = [(t["id"], p.store.state_counts(t["id"])) for t in p.store.tasks()]
        except StorageError:  # the counters above still tell what this instance did
            counts = None
        up.add_metric([me], 0.0 if counts is None else 1.0)
        yield up
        for task_id, by_state in counts or []:
            for state, n in sorted(by_state.items()):
                states.add_metric([me, str(task_id), state], n)
        yield states


def exposition(platform: Platform, accept: str | None) -> tuple[bytes, str]:
    """(body, content type) for one scrape; OpenMetrics when the scraper asks for it."""
    encoder, content_type = choose_encoder(accept or "")
    scrape = CollectorRegistry(auto_describe=False)
    scrape.register(_StoreCollector(platform))
    body = encoder(_registry)
    extra = encoder(scrape)
    eof = b"# EOF\n"
    if body.endswith(eof):  # OpenMetrics: one EOF marker, at the very end
        body = body[:-len(eof)]
    return body + extra, content_type


def metrics_token(data_dir: Path) -> str:
    """DATA/metrics.token, made (0600) when missing."""
    path = Path(data_dir) / "metrics.token"
    if path.exists():
        token = path.read_text().strip()
        if token:
            return token
    token = secrets.token_urlsafe(24)
    tmp = path.with_name(f".metrics.token.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.replace(tmp, path)
    return token


def _allowed(request: web.Request) -> bool:
    given = request.headers.get("Authorization", "")  # any bytes: a mismatch, never an error
    return any(same_secret(given, f"Bearer {request.app[k]}") for k in (_TOKEN_KEY, _ADMIN_KEY))


async def handler(request: web.Request) -> web.Response:
    if not _allowed(request):
        return web.json_response({"error": "give Authorization: Bearer <metrics.token or "
                                  "admin token>"}, status=401,
                                 headers={"WWW-Authenticate": "Bearer"})
    platform = request.app[PLATFORM_KEY]
    body, content_type = exposition(platform, request.headers.get("Accept"))
    resp = web.Response(body=body)
    resp.headers["Content-Type"] = content_type
    return resp


@web.middleware
async def count_downloads(request: web.Request,
                          handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                          ) -> web.StreamResponse:
    if request.path != _DOWNLOAD_PATH:
        return await handler(request)  # (aiohttp passes it by this name)
    resp = await handler(request)
    me = instance()
    if resp.status in (200, 206):
        DOWNLOADS.labels(me).inc()
        # write_eof (the last byte sent) sets body_length; a download cut short
        # (device gone, cancel) never gets there.
        if resp.body_length > 0 and request.method == "GET":
            COMPLETED.labels(me).inc()
            BYTES.labels(me).inc(resp.content_length or 0)
    elif resp.status in (403, 404, 416):
        REFUSED.labels(me).inc()
    return resp


def add_routes(app: web.Application, admin_token: str) -> None:
    """/metrics and the download counters on the platform's app (before it starts)."""
    app[_TOKEN_KEY] = metrics_token(app[PLATFORM_KEY].data_dir)
    app[_ADMIN_KEY] = admin_token
    app.middlewares.append(count_downloads)
    app.router.add_get("/metrics", handler)
