"""Firmware packages: images in `DIR/packages/<id>.bin`, metadata in the store.

An image is written to a temporary upload file, hashed (size, MD5, SHA-256) and moved into
place only when its row is stored, so a failed upload leaves nothing behind. Package ids
are 20 lowercase hex digits (the notices' `fileId`); only such names are ever opened, so a
download request can't reach any other file.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import shutil
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..images.facts import ImageFacts, image_facts
from . import variants
from .store import Store
from .validate import PACKAGE_RE, PlatformError, text

# A URL fetch (`POST /api/packages {"url"}`, `fota package create --url`): each connect and
# read may wait FETCH_READ_TIMEOUT seconds, the whole fetch FETCH_DEADLINE (environment:
# FOTA_FETCH_DEADLINE). Below the CLI's 60 s API timeout, so the CLI hears why a slow fetch
# failed rather than timing out itself while the platform goes on fetching.
FETCH_READ_TIMEOUT = 30.0
FETCH_DEADLINE = 50.0
# URL fetches at once (environment: FOTA_MAX_FETCHES); one more is refused with 503.
MAX_FETCHES = 4


def fetch_deadline() -> float:
    """Seconds a whole URL fetch may take: FOTA_FETCH_DEADLINE, else FETCH_DEADLINE."""
    return _env_number("FOTA_FETCH_DEADLINE", FETCH_DEADLINE)


def max_fetches() -> int:
    """URL fetches one platform runs at once: FOTA_MAX_FETCHES, else MAX_FETCHES."""
    return max(1, int(_env_number("FOTA_MAX_FETCHES", MAX_FETCHES)))


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    try:
        value = float(raw) if raw else default
    except ValueError:
        raise PlatformError(f"{name} must be a number of seconds or fetches, got {raw!r}") \
            from None
    if not 0 < value < 1e9:   # nan and inf too
        raise PlatformError(f"{name} must be a number above 0 (and below 1e9), got {raw!r}")
    return value


def _cut_off(url: str, got: int, promised: int | None, how: str) -> str:
    whole = f"the {promised} bytes its Content-Length promised" if promised is not None \
        else "the end of its body"
    return (f"could not fetch {url}: {how} after {got} bytes, before {whole}: "
            "nothing stored")


def hash_file(path: Path) -> tuple[int, str, str]:
    md5, sha = hashlib.md5(), hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 16):
            md5.update(chunk)
            sha.update(chunk)
            size += len(chunk)
    return size, md5.hexdigest(), sha.hexdigest()


class PackageStore:
    """The packages of one platform: rows in `store`, files in `files_dir`."""

    def __init__(self, store: Store, files_dir: Path) -> None:
        self.store = store
        self.files_dir = files_dir
        self.max_fetches = max_fetches()
        self._fetch_slots = threading.BoundedSemaphore(self.max_fetches)
        self.files_dir.mkdir(parents=True, exist_ok=True)

    def package_path(self, package_id: str) -> Path | None:
        """The file of a stored package, or None; ids are validated so no path escapes."""
        if not isinstance(package_id, str) or not PACKAGE_RE.match(package_id):
            return None
        path = self.files_dir / f"{package_id}.bin"
        return path if path.is_file() else None

    def missing_images(self) -> list[str]:
        """The stored packages whose image file is gone from the folder (the same count
        `platform backup` reports as missing_images)."""
        with self.store.lock:
            ids = [r["id"] for r in self.store.packages()]
        return [i for i in ids if self.package_path(i) is None]

    def require_image(self, package_id: str) -> None:
        """`PlatformError` 404 for an unknown package, 409 when a stored package's image
        file is gone (devices given it would only fail their download)."""
        with self.store.lock:  # reentrant: callers may hold it
            if not isinstance(package_id, str) or self.store.package(package_id) is None:
                raise PlatformError(f"unknown package {package_id!r}", 404)
        if self.package_path(package_id) is None:
            raise PlatformError(
                f"package {package_id}'s image file is missing from {self.files_dir}: "
                "upload the package again or restore the packages folder from a backup", 409)

    def check_shared_folder(self) -> None:
        """`PlatformError` unless this folder holds every package file (images and their
        compressed/delta variants) the store lists: instances sharing a database serve
        each other's packages, so they must share one folder."""
        with self.store.lock:
            rows = self.store.packages()
            ids = [r["id"] for r in rows]
            ids += [v["id"] for r in rows for v in self.store.variants(r["id"])]
        missing = [i for i in ids if not (self.files_dir / f"{i}.bin").is_file()]
        if missing:
            raise PlatformError(
                f"the packages folder {self.files_dir} lacks {len(missing)} of the {len(ids)} "
                f"package files the database lists (first: {missing[0]}.bin): all instances "
                "on one database must share one folder (--packages DIR)")

    def new_upload_path(self) -> Path:
        return self.files_dir / f".upload-{secrets.token_hex(8)}"

    def add_package(self, upload: Path, *, version: Any = None, name: Any = None,
                    product: Any = None, sign: Any = "md5", desc: Any = None, module: Any = None,
                    source: str = "upload", require_signed: bool = False) -> dict[str, Any]:
        """Register a file already written to `new_upload_path()`; it is moved into the store.

        The version is the one the image carries (ESP32 app descriptor, app bundle header)
        when it carries one: a different `version` is refused, a missing one taken from it.
        With `require_signed`, an image without a Secure Boot V2 signature is refused.
        On any error the upload is removed, and nothing is stored.
        """
        try:
            facts = image_facts(upload.read_bytes())
            version = _version(facts, text(version, "version"), require_signed)
            name = text(name, "name", default=version)
            product = text(product, "product", default="default")
            module = text(module, "module", default="MCU")
            desc = text(desc, "desc")
            if sign not in ("md5", "sha256"):
                raise PlatformError("sign must be md5 or sha256")
            size, md5, sha = hash_file(upload)
            if size == 0:
                raise PlatformError("the firmware file is empty")
            package_id = secrets.token_hex(10)
            final = self.files_dir / f"{package_id}.bin"
            with self.store.lock:
                try:
                    self.store.insert_package(dict(
                        id=package_id, name=name, product=product, version=version,
                        module=module, sign=sign, size=size, md5=md5, sha256=sha, desc=desc,
                        source=source, created=time.time(), signed=int(facts.signed),
                        key_digests=",".join(facts.key_digests),
                        secure_version=facts.secure_version))
                    os.replace(upload, final)
                    self.store.commit()
                except BaseException:
                    self.store.rollback()
                    final.unlink(missing_ok=True)
                    raise
            return self.get_package(package_id)
        finally:
            if upload.exists():
                upload.unlink()

    def add_package_file(self, path: str | Path, **meta: Any) -> dict[str, Any]:
        src = Path(path)
        if not src.is_file():
            raise PlatformError(f"no such file: {src}")
        upload = self.new_upload_path()
        shutil.copyfile(src, upload)
        return self.add_package(upload, source=f"file:{src.name}", **meta)

    @contextlib.contextmanager
    def _fetch_slot(self) -> Iterator[None]:
        """One of the `max_fetches` URL fetches at once, or `PlatformError` 503 (at once,
        never queued: a queue of stalled fetches is what held the platform up)."""
        if not self._fetch_slots.acquire(blocking=False):
            raise PlatformError(f"too many package fetches in progress (at most "
                                f"{self.max_fetches} at once): try again when one has finished",
                                503)
        try:
            yield
        finally:
            self._fetch_slots.release()

    async def fetch_url(self, url: str, max_bytes: int, *, timeout: float = FETCH_READ_TIMEOUT,
                        deadline: float | None = None) -> Path:
        """Download `url` into a new upload file and return its path; on any failure the
        file is removed and `PlatformError` raised (502, 504 past the deadline).

        The body must be whole: shorter than its Content-Length, a chunked body cut off, a
        connection reset are failures (an upload of a truncated image stored as a package
        was served to devices, and its version blocked later tasks). `timeout` bounds each
        connect and read, `deadline` (default `fetch_deadline()`) the whole fetch."""
        import aiohttp

        deadline = fetch_deadline() if deadline is None else deadline
        limits = aiohttp.ClientTimeout(total=deadline, sock_connect=timeout, sock_read=timeout)
        upload = self.new_upload_path()
        got, promised, started = 0, None, False
        began = time.monotonic()
        try:
            async with aiohttp.ClientSession(timeout=limits, trust_env=True) as session, \
                    session.get(url) as resp:
                if resp.status != 200:
                    raise PlatformError(f"could not fetch {url}: HTTP {resp.status} "
                                        f"{resp.reason or ''}".rstrip(), 502)
                # a compressed body's length is not the image's: aiohttp checks that one
                promised = None if "Content-Encoding" in resp.headers else resp.content_length
                started = True
                with open(upload, "wb") as out:
                    async for chunk in resp.content.iter_chunked(1 << 16):
                        got += len(chunk)
                        if got > max_bytes:
                            raise PlatformError(f"firmware larger than {max_bytes} bytes", 413)
                        out.write(chunk)
            if promised is not None and got != promised:
                raise PlatformError(_cut_off(url, got, promised, "the connection ended"), 502)
            return upload
        except BaseException as exc:
            upload.unlink(missing_ok=True)
            if isinstance(exc, PlatformError) or not isinstance(exc, Exception):
                raise
            if isinstance(exc, aiohttp.ClientPayloadError) or (
                    started and isinstance(exc, (aiohttp.ClientError, OSError))
                    and not isinstance(exc, TimeoutError)):  # a reset half-way
                raise PlatformError(_cut_off(url, got, promised, "the body was cut off"),
                                    502) from None
            if isinstance(exc, TimeoutError):  # the deadline, or one read's timeout
                whole = time.monotonic() - began >= deadline - 0.5
                why = f"not finished within the {deadline:g} s a fetch may take" if whole \
                    else f"no data for {timeout:g} s"
                raise PlatformError(f"could not fetch {url}: {why} (got {got} bytes"
                                    + (f" of {promised}" if promised else "")
                                    + "): nothing stored", 504) from None
            if isinstance(exc, (aiohttp.ClientError, OSError, ValueError)):
                raise PlatformError(f"could not fetch {url}: {exc}: nothing stored",
                                    502) from None
            raise

    async def add_package_url_async(self, url: Any, max_bytes: int = 64 << 20,
                                    timeout: float = FETCH_READ_TIMEOUT,
                                    deadline: float | None = None,
                                    **meta: Any) -> dict[str, Any]:
        """Fetch a remote firmware once (`fetch_url`), hash it and store it. At most
        `max_fetches` run at once; one more is refused with 503."""
        if not isinstance(url, str) or urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise PlatformError("url must be an http(s) address")
        with self._fetch_slot():
            upload = await self.fetch_url(url, max_bytes, timeout=timeout, deadline=deadline)
        return await asyncio.to_thread(self.add_package, upload, source=url, **meta)

    def add_package_url(self, url: Any, max_bytes: int = 64 << 20,
                        timeout: float = FETCH_READ_TIMEOUT, **meta: Any) -> dict[str, Any]:
        """`add_package_url_async` for a caller without an event loop (the CLI on a
        stopped platform)."""
        return asyncio.run(self.add_package_url_async(url, max_bytes, timeout, **meta))

    def _package_view(self, row: dict[str, Any]) -> dict[str, Any]:
        view = {k: row[k] for k in ("id", "name", "product", "version", "module", "sign", "size",
                                    "md5", "sha256", "desc", "source", "created")}
        view.update(signed=bool(row["signed"]),
                    key_digests=[d for d in row["key_digests"].split(",") if d],
                    secure_version=row["secure_version"],
                    variants=[variant_view(v, row["size"])
                              for v in self.store.variants(row["id"])])
        return view

    def get_package(self, package_id: Any) -> dict[str, Any]:
        with self.store.lock:
            row = self.store.package(package_id) if isinstance(package_id, str) else None
            if row is None:
                raise PlatformError(f"unknown package {package_id!r}", 404)
            return self._package_view(row)

    def list_packages(self) -> list[dict[str, Any]]:
        with self.store.lock:
            return [self._package_view(r) for r in self.store.packages()]

    def add_variant(self, package_id: Any, kind: Any, base: Any = None) -> dict[str, Any]:
        """Make the package's compressed file (`kind` "compressed"), or its delta from the
        package `base` ("delta"): checked by decoding it back to the image before it is
        stored. Returns the variant (its kind, file id, size, md5, sha256, ratio)."""
        pkg = self.get_package(package_id)
        if kind not in ("compressed", "delta"):
            raise PlatformError("kind must be compressed or delta")
        image = self._read(pkg["id"])
        base_pkg = None
        with self.store.lock:
            if kind == "delta":
                base_pkg = self.get_package(base)
                if base_pkg["id"] == pkg["id"]:
                    raise PlatformError("a delta needs another package as its base")
                if base_pkg["version"] == pkg["version"]:
                    raise PlatformError(f"both packages are version {pkg['version']}: devices "
                                        "on it need no update")
            if self.store.variant(pkg["id"], kind, base_pkg["version"] if base_pkg else ""):
                what = f"a delta from {base_pkg['version']}" if base_pkg else "a compressed file"
                raise PlatformError(f"package {pkg['id']} has {what} already", 409)
        data = variants.make(kind, image, self._read(base_pkg["id"]) if base_pkg else None,
                             pkg["version"], base_pkg["version"] if base_pkg else None)
        file_id = secrets.token_hex(10)
        final = self.files_dir / f"{file_id}.bin"
        upload = self.new_upload_path()
        try:
            upload.write_bytes(data)
            with self.store.lock:
                try:
                    if self.store.variant(pkg["id"], kind,
                                          base_pkg["version"] if base_pkg else ""):
                        raise PlatformError("made at the same time by another request", 409)
                    self.store.insert_variant(dict(
                        id=file_id, package_id=pkg["id"], kind=kind,
                        base_package=base_pkg["id"] if base_pkg else None,
                        base_version=base_pkg["version"] if base_pkg else "",
                        size=len(data), md5=hashlib.md5(data).hexdigest(),
                        sha256=hashlib.sha256(data).hexdigest(), created=time.time()))
                    os.replace(upload, final)
                    self.store.commit()
                except BaseException:
                    self.store.rollback()
                    final.unlink(missing_ok=True)
                    raise
        finally:
            upload.unlink(missing_ok=True)
        with self.store.lock:
            row = self.store.variant(pkg["id"], kind, base_pkg["version"] if base_pkg else "")
        assert row is not None
        return {"package": pkg["id"], **variant_view(row, pkg["size"])}

    def _read(self, package_id: str) -> bytes:
        path = self.package_path(package_id)
        if path is None:
            raise PlatformError(f"the image of package {package_id} is missing", 404)
        return path.read_bytes()


def variant_view(row: dict[str, Any], full_size: int) -> dict[str, Any]:
    view = {k: row[k] for k in ("kind", "id", "size", "md5", "sha256")}
    if row["kind"] == "delta":
        view.update(base_package=row["base_package"], base_version=row["base_version"])
    view["ratio"] = round(row["size"] / full_size, 4) if full_size else None
    return view


def _version(facts: ImageFacts, version: str, require_signed: bool) -> str:
    """The package's version: the image's own when it carries one (a different `version`
    is refused), else `version` (then required)."""
    if facts.format in ("compressed", "delta"):
        raise PlatformError(f"this is a {facts.format} image: store the full image (the "
                            "platform makes compressed and delta files from packages)")
    if require_signed and not facts.signed:
        raise PlatformError("the image is not signed, and this platform serves signed images "
                            "only (--require-signed): sign it with `fota sign IMAGE --key "
                            "KEY.pem -o OUT`", 422)
    if facts.version is None:
        if not version:
            raise PlatformError("version is required: the image carries none the platform "
                                "can read (not an ESP32 app image or an app bundle)")
        return version
    if version and version != facts.version:
        kind = "app descriptor" if facts.format == "esp32" else "bundle header"
        raise PlatformError(
            f"the image carries version {facts.version!r} in its {kind}, not {version!r}: "
            f"devices report {facts.version!r} once they run it, so the task would never "
            f"see {version!r}. Give --version {facts.version!r}, or leave it out.")
    return facts.version
