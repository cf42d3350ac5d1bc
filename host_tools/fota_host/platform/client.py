"""How the CLI (and tests, demos, benches) reach a platform: one interface, `PlatformOps`,
implemented by `ApiClient` (the admin API of the service running on DIR, found through
`DIR/service.json`) and `LocalClient` (the same operations on the store directly, when no
service runs on DIR). Both raise `PlatformError` with the service's message on bad input.
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Protocol

from .core import Platform
from .validate import PlatformError


class PlatformOps(Protocol):
    """The console's operations; every result is the JSON the admin API answers."""

    def create_package(self, *, version: str | None = None, file: str | None = None,
                       url: str | None = None,
                       name: str | None = None, product: str | None = None,
                       module: str | None = None, sign: str = "md5",
                       desc: str | None = None) -> dict[str, Any]: ...
    def list_packages(self) -> list[dict[str, Any]]: ...
    def get_package(self, package_id: str) -> dict[str, Any]: ...
    def add_variant(self, package_id: str, kind: str,
                    base: str | None = None) -> dict[str, Any]: ...
    def create_task(self, *, package: str, name: str, desc: str | None = None,
                    start: str | None = None, end: str | None = None,
                    rollout: dict[str, Any] | None = None) -> dict[str, Any]: ...
    def list_tasks(self) -> list[dict[str, Any]]: ...
    def get_task(self, task_id: Any) -> dict[str, Any]: ...
    def add_devices(self, task_id: Any, devices: list[str]) -> list[dict[str, Any]]: ...
    def import_devices(self, task_id: Any, csv_text: str) -> list[dict[str, Any]]: ...
    def start_task(self, task_id: Any) -> dict[str, Any]: ...
    def cancel(self, task_id: Any, devices: list[str] | None) -> list[dict[str, Any]]: ...
    def list_devices(self) -> list[dict[str, Any]]: ...
    # rollouts (#16): `rollout` holds rollout_spec.SPEC_KEYS (waves, max_failures, ...)
    def pause_task(self, task_id: Any) -> dict[str, Any]: ...
    def resume_task(self, task_id: Any) -> dict[str, Any]: ...
    def stop_task(self, task_id: Any) -> dict[str, Any]: ...
    def approve_task(self, task_id: Any) -> dict[str, Any]: ...
    def task_stats(self, task_id: Any) -> dict[str, Any]: ...
    def tag_devices(self, devices: list[str], add: str | None = None,
                    remove: str | None = None) -> list[dict[str, Any]]: ...
    def device_tags(self) -> dict[str, list[str]]: ...
    def device_versions(self) -> dict[str, Any]: ...
    def close(self) -> None: ...


def read_service_info(data_dir: Path) -> dict[str, Any] | None:
    """DIR/service.json of a running service, or None."""
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


class ApiClient:
    """`PlatformOps` over the admin API (Bearer token from service.json)."""

    def __init__(self, info: dict[str, Any], timeout: float = 60.0) -> None:
        self.base = info["api"].rstrip("/")
        self.token = info["admin_token"]
        self.timeout = timeout
        self.ssl_ctx = None
        if self.base.startswith("https"):
            self.ssl_ctx = ssl.create_default_context(cafile=info.get("tls_cert"))
            self.ssl_ctx.check_hostname = False

    def call(self, method: str, path: str, body: Any = None, *, data: Any = None,
             content_type: str = "application/json", query: dict[str, Any] | None = None,
             headers: dict[str, str] | None = None) -> Any:
        url = self.base + path
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        if body is not None:
            data = json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            req.add_header("Content-Type", content_type)
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self.ssl_ctx) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read()).get("error", exc.reason)
            except (ValueError, AttributeError):
                message = str(exc.reason)
            raise PlatformError(str(message), exc.code) from None
        except (urllib.error.URLError, OSError) as exc:
            raise PlatformError(f"platform at {self.base} unreachable: {exc}", 503) from None

    # == PlatformOps ==
    def create_package(self, *, version: str | None = None, file: str | None = None,
                       url: str | None = None,
                       name: str | None = None, product: str | None = None,
                       module: str | None = None, sign: str = "md5",
                       desc: str | None = None) -> dict[str, Any]:
        meta = {k: v for k, v in dict(version=version, name=name, product=product,
                                      module=module, sign=sign, desc=desc).items()
                if v is not None}
        if url:
            return self.call("POST", "/api/packages", {"url": url, **meta})
        path = Path(file or "")
        if not path.is_file():
            raise PlatformError(f"no such file: {path}")
        size = path.stat().st_size
        with open(path, "rb") as f:
            return self.call("POST", "/api/packages", data=f,
                             content_type="application/octet-stream",
                             headers={"Content-Length": str(size)},
                             query={**meta, "source": f"file:{path.name}"})

    def list_packages(self) -> list[dict[str, Any]]:
        return self.call("GET", "/api/packages")

    def get_package(self, package_id: str) -> dict[str, Any]:
        return self.call("GET", f"/api/packages/{urllib.parse.quote(package_id, safe='')}")

    def add_variant(self, package_id: str, kind: str,
                    base: str | None = None) -> dict[str, Any]:
        return self.call("POST", f"/api/packages/{urllib.parse.quote(package_id, safe='')}"
                         "/variants", {"kind": kind, "from": base})

    def create_task(self, *, package: str, name: str, desc: str | None = None,
                    start: str | None = None, end: str | None = None,
                    rollout: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.call("POST", "/api/tasks", {"package": package, "name": name, "desc": desc,
                                                "start": start, "end": end, **(rollout or {})})

    def list_tasks(self) -> list[dict[str, Any]]:
        return self.call("GET", "/api/tasks")

    def get_task(self, task_id: Any) -> dict[str, Any]:
        return self.call("GET", f"/api/tasks/{_tid(task_id)}")

    def add_devices(self, task_id: Any, devices: list[str]) -> list[dict[str, Any]]:
        return self.call("POST", f"/api/tasks/{_tid(task_id)}/devices", {"devices": devices})

    def import_devices(self, task_id: Any, csv_text: str) -> list[dict[str, Any]]:
        return self.call("POST", f"/api/tasks/{_tid(task_id)}/import", data=csv_text.encode(),
                         content_type="text/csv")

    def start_task(self, task_id: Any) -> dict[str, Any]:
        return self.call("POST", f"/api/tasks/{_tid(task_id)}/start", {})

    def cancel(self, task_id: Any, devices: list[str] | None) -> list[dict[str, Any]]:
        body = {"all": True} if devices is None else {"devices": devices}
        return self.call("POST", f"/api/tasks/{_tid(task_id)}/cancel", body)

    def list_devices(self) -> list[dict[str, Any]]:
        return self.call("GET", "/api/devices")

    def pause_task(self, task_id: Any) -> dict[str, Any]:
        return self.call("POST", f"/api/tasks/{_tid(task_id)}/pause", {})

    def resume_task(self, task_id: Any) -> dict[str, Any]:
        return self.call("POST", f"/api/tasks/{_tid(task_id)}/resume", {})

    def stop_task(self, task_id: Any) -> dict[str, Any]:
        return self.call("POST", f"/api/tasks/{_tid(task_id)}/stop", {})

    def approve_task(self, task_id: Any) -> dict[str, Any]:
        return self.call("POST", f"/api/tasks/{_tid(task_id)}/approve", {})

    def task_stats(self, task_id: Any) -> dict[str, Any]:
        return self.call("GET", f"/api/tasks/{_tid(task_id)}/stats")

    def tag_devices(self, devices: list[str], add: str | None = None,
                    remove: str | None = None) -> list[dict[str, Any]]:
        body: dict[str, Any] = {"devices": devices}
        body.update({"add": add} if add is not None else {"remove": remove})
        return self.call("POST", "/api/devices/tags", body)

    def device_tags(self) -> dict[str, list[str]]:
        return self.call("GET", "/api/devices/tags")

    def device_versions(self) -> dict[str, Any]:
        return self.call("GET", "/api/devices/versions")

    def close(self) -> None:
        pass


def _tid(task_id: Any) -> str:
    text = str(task_id)
    if not text.isdigit():
        raise PlatformError(f"task id must be an integer, got {task_id!r}")
    return text



class LocalClient:
    """`PlatformOps` on the store when no service runs (nothing is pushed until it does)."""

    def __init__(self, data_dir: Path) -> None:
        self.platform = Platform(Path(data_dir))

    def create_package(self, *, version: str | None = None, file: str | None = None,
                       url: str | None = None,
                       name: str | None = None, product: str | None = None,
                       module: str | None = None, sign: str = "md5",
                       desc: str | None = None) -> dict[str, Any]:
        meta = dict(version=version, name=name, product=product, module=module, sign=sign,
                    desc=desc)
        if url:
            return self.platform.packages.add_package_url(url, **meta)
        return self.platform.packages.add_package_file(file or "", **meta)

    def list_packages(self) -> list[dict[str, Any]]:
        return self.platform.packages.list_packages()

    def get_package(self, package_id: str) -> dict[str, Any]:
        return self.platform.packages.get_package(package_id)

    def add_variant(self, package_id: str, kind: str,
                    base: str | None = None) -> dict[str, Any]:
        return self.platform.packages.add_variant(package_id, kind, base)

    def create_task(self, *, package: str, name: str, desc: str | None = None,
                    start: str | None = None, end: str | None = None,
                    rollout: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.platform.rollouts.create_task({
            "package": package, "name": name, "desc": desc, "start": start, "end": end,
            **(rollout or {})})

    def list_tasks(self) -> list[dict[str, Any]]:
        return self.platform.tasks.list_tasks()

    def get_task(self, task_id: Any) -> dict[str, Any]:
        return self.platform.rollouts.get_task(task_id)

    def add_devices(self, task_id: Any, devices: list[str]) -> list[dict[str, Any]]:
        return self.platform.tasks.add_devices(task_id, devices)

    def import_devices(self, task_id: Any, csv_text: str) -> list[dict[str, Any]]:
        return self.platform.tasks.import_devices(task_id, csv_text)

    def start_task(self, task_id: Any) -> dict[str, Any]:
        return self.platform.rollouts.start_task(task_id)

    def cancel(self, task_id: Any, devices: list[str] | None) -> list[dict[str, Any]]:
        return self.platform.tasks.cancel(task_id, devices)

    def list_devices(self) -> list[dict[str, Any]]:
        return self.platform.list_devices()

    def pause_task(self, task_id: Any) -> dict[str, Any]:
        return self.platform.rollouts.pause(task_id)

    def resume_task(self, task_id: Any) -> dict[str, Any]:
        return self.platform.rollouts.resume(task_id)

    def stop_task(self, task_id: Any) -> dict[str, Any]:
        return self.platform.rollouts.stop(task_id)

    def approve_task(self, task_id: Any) -> dict[str, Any]:
        return self.platform.rollouts.approve(task_id)

    def task_stats(self, task_id: Any) -> dict[str, Any]:
        return self.platform.rollouts.task_stats(task_id)

    def tag_devices(self, devices: list[str], add: str | None = None,
                    remove: str | None = None) -> list[dict[str, Any]]:
        return self.platform.rollouts.tag(devices, add, remove)

    def device_tags(self) -> dict[str, list[str]]:
        return self.platform.rollouts.device_tags()

    def device_versions(self) -> dict[str, Any]:
        return self.platform.rollouts.fleet_versions()

    def close(self) -> None:
        self.platform.close()


def connect(data_dir: str | Path) -> PlatformOps:
    """The running service on DIR (its admin API), else the store on DIR directly."""
    data_dir = Path(data_dir)
    info = read_service_info(data_dir)
    if info and pid_alive(info.get("pid")):
        return ApiClient(info)
    if not data_dir.is_dir():
        raise PlatformError(f"no platform data folder at {data_dir}: start `fota platform "
                            f"serve --data {data_dir}` once (it makes the folder), or create "
                            "it, or give the --data of your platform")
    return LocalClient(data_dir)
