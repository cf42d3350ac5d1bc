"""The data folder's care: one platform at a time (`DataLock`), owner-only permissions,
leftovers of interrupted uploads, the store's integrity at start-up, backup and restore.

- `DataLock`: `DIR/.lock`, an flock held for as long as a `Platform` is open on DIR; a
  second one is refused with a message naming the holder (pid, and its ports from
  service.json), before it touches any file. (Instances sharing a PostgreSQL store each
  have their own DIR.)
- `secure(DIR)`: DIR (and `packages/`) 0700, the files the platform writes 0600.
- `check_store(DIR)`: refuses a damaged `platform.db` (bad header, 0 bytes or missing while
  `packages/` holds images, `PRAGMA quick_check` errors) with `DamagedStore`, which says
  how to restore.
- `backup(DIR, FILE)` / `restore(DIR, FILE)`: a tar file holding a consistent copy of the
  store (SQLite's online backup, safe while the service runs) and the package images.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sqlite3
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any, BinaryIO

from .validate import PlatformError

DB_NAME = "platform.db"
SQLITE_HEADER = b"SQLite format 3\x00"
STORE_NOTE = "store.json"  # {"db": URL without its password}: DIR's store is in PostgreSQL
PRIVATE_FILES = ("platform.db", "platform.db-wal", "platform.db-shm", "service.json",
                 "admin.token", "platform.log", ".lock", STORE_NOTE)


class DamagedStore(PlatformError):
    """`platform.db` is damaged: the platform refuses to start on it."""

    def __init__(self, data_dir: Path, detail: str) -> None:
        super().__init__(
            f"{data_dir / DB_NAME} is damaged ({detail}); the platform will not start on it. "
            f"Restore a backup: `fota platform restore --data {data_dir} BACKUP` (made with "
            f"`fota platform backup --data {data_dir} -o BACKUP`), or move {DB_NAME} away to "
            "start with an empty store.", 503)


class DataLock:
    """An exclusive lock on DIR, or `PlatformError` naming who holds it."""

    def __init__(self, data_dir: Path, what: str) -> None:
        self.path = data_dir / ".lock"
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise PlatformError(holder_message(data_dir), 409) from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "what": what}).encode())
        self.fd: int | None = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock; the file stays (no unlink race)
            self.fd = None


def holder_message(data_dir: Path) -> str:
    """Who holds DIR: the running service (pid, api, broker) or another fota command."""
    try:
        holder = json.loads((data_dir / ".lock").read_text())
    except (OSError, ValueError):
        holder = {}
    pid = holder.get("pid")
    try:
        info = json.loads((data_dir / "service.json").read_text())
    except (OSError, ValueError):
        info = {}
    if info.get("pid") == pid and pid:
        return (f"{data_dir} is in use by a running `fota platform serve` (pid {pid}, api "
                f"{info.get('api')}, broker {info.get('broker')}): stop it first, or let the "
                "fota commands talk to it")
    what = holder.get("what", "another fota process")
    return f"{data_dir} is in use by {what} (pid {pid}); nothing was changed"


def secure(data_dir: Path) -> None:
    """DIR and packages/ owner-only (0700), the platform's files 0600."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    (data_dir / "packages").mkdir(mode=0o700, exist_ok=True)
    for folder in (data_dir, data_dir / "packages"):
        _chmod(folder, 0o700)
    for name in PRIVATE_FILES:
        _chmod(data_dir / name, 0o600)
    for image in (data_dir / "packages").iterdir():
        _chmod(image, 0o600)


def _chmod(path: Path, mode: int) -> None:
    try:
        if path.exists() and path.stat().st_mode & 0o777 != mode:
            os.chmod(path, mode)
    except OSError:
        pass  # not ours (a shared folder): the folder's own mode still protects the files


LEFTOVERS = ("packages/.upload-*", ".service.json.*.tmp", "admin.tmp", ".restore-*")


def clean_uploads(data_dir: Path) -> list[str]:
    """Remove what a killed upload (`packages/.upload-*`), service start (temporary
    service.json and admin.token files) or restore (`.restore-*`) left behind (only called
    with the lock held: none of ours can be in flight)."""
    removed = []
    for pattern in LEFTOVERS:
        for leftover in data_dir.glob(pattern):
            try:
                if leftover.is_dir():
                    shutil.rmtree(leftover)
                else:
                    leftover.unlink()
                removed.append(leftover.name)
            except OSError:
                pass
    return removed


def _images(data_dir: Path) -> list[Path]:
    folder = data_dir / "packages"
    return sorted(folder.glob("*.bin")) if folder.is_dir() else []


def note_store(data_dir: Path, shown_db: str) -> None:
    """DIR is served with a PostgreSQL store: say so in DIR/store.json, so a command that
    opens DIR itself (no service running) does not start an empty SQLite store there."""
    path = data_dir / STORE_NOTE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"db": shown_db}, f)


def check_store(data_dir: Path) -> None:
    """`DamagedStore` unless `platform.db` is absent-with-no-images or a sound database;
    `PlatformError` when DIR's store is in PostgreSQL (DIR/store.json)."""
    try:
        shown_db = json.loads((data_dir / STORE_NOTE).read_text()).get("db")
    except (OSError, ValueError, AttributeError):
        shown_db = None
    if shown_db:
        raise PlatformError(
            f"{data_dir} is served with its store in PostgreSQL ({shown_db}): start "
            f"`fota platform serve --data {data_dir} --db URL` and the fota commands talk to "
            f"it (remove {data_dir / STORE_NOTE} to start an SQLite store here instead)", 409)
    path = data_dir / DB_NAME
    images = len(_images(data_dir))
    if not path.exists():
        if images:
            raise DamagedStore(data_dir, f"missing while packages/ holds {images} image(s)")
        return
    with open(path, "rb") as f:
        head = f.read(len(SQLITE_HEADER))
    if not head:
        if images:
            raise DamagedStore(data_dir, f"0 bytes while packages/ holds {images} image(s)")
        return
    if head != SQLITE_HEADER:
        raise DamagedStore(data_dir, "not an SQLite database: bad file header")
    problems = quick_check(path, immutable=True)
    if problems:
        raise DamagedStore(data_dir, "integrity check: " + "; ".join(problems[:3]))


def quick_check(path: Path, immutable: bool = False) -> list[str]:
    """`PRAGMA quick_check` of an SQLite file: [] when sound, else what is wrong.
    `immutable`: the file alone, read without creating -wal/-shm files next to it."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro{'&immutable=1' if immutable else ''}",
                             uri=True)
        try:
            rows = [r[0] for r in db.execute("PRAGMA quick_check").fetchall()]
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        return [str(exc)]
    return [] if rows == ["ok"] else rows


# -- backup and restore ---------------------------------------------------------------------
def backup(data_dir: Path, out: Path) -> dict[str, Any]:
    """Write a tar file with a consistent copy of platform.db (online backup: the service
    may be running) and every package image. Returns what it holds."""
    src_path = data_dir / DB_NAME
    if not src_path.is_file():
        raise PlatformError(f"no {DB_NAME} in {data_dir} (a platform served with --db keeps "
                            "its store in PostgreSQL: back that up with pg_dump, and the "
                            "--packages folder with it)")
    out = Path(out)
    with tempfile.TemporaryDirectory(dir=out.parent if out.parent.exists() else None) as tmp:
        snap = Path(tmp) / DB_NAME
        src = sqlite3.connect(f"file:{src_path}?mode=ro", uri=True)
        dst = sqlite3.connect(snap)
        try:
            src.backup(dst)
            packages = [r[0] for r in dst.execute("SELECT id FROM packages")]
        except sqlite3.DatabaseError as exc:
            raise PlatformError(f"cannot back up {src_path}: {exc}") from None
        finally:
            dst.close()
            src.close()
        fd = os.open(f"{out}.tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w") as tar:
            tar.add(snap, DB_NAME)
            images = 0
            for pid in packages:
                image = data_dir / "packages" / f"{pid}.bin"
                if image.is_file():
                    tar.add(image, f"packages/{pid}.bin")
                    images += 1
        os.replace(f"{out}.tmp", out)
    return {"backup": str(out), "packages": len(packages), "images": images,
            "missing_images": len(packages) - images}


def restore(data_dir: Path, archive: Path) -> dict[str, Any]:
    """Replace DIR's store (and images) with a backup; the platform must not be running.
    The store replaced is kept as `platform.db.damaged-<time>` (never deleted)."""
    data_dir = Path(data_dir)
    secure(data_dir)
    lock = DataLock(data_dir, "fota platform restore")
    try:
        with tempfile.TemporaryDirectory(prefix=".restore-", dir=data_dir) as tmp:
            staged = Path(tmp)
            _unpack(Path(archive), staged)
            problems = quick_check(staged / DB_NAME)
            if problems:
                raise PlatformError(f"{archive}: the store in it is damaged too: {problems[0]}")
            stamp = time.strftime("%Y%m%dT%H%M%S")
            kept = []
            for suffix in ("", "-wal", "-shm"):  # a stale -wal would be replayed into it
                old = data_dir / (DB_NAME + suffix)
                if old.exists():
                    aside = data_dir / f"{DB_NAME}{suffix}.damaged-{stamp}"
                    os.replace(old, aside)
                    kept.append(aside.name)
            images = 0
            for image in (staged / "packages").glob("*.bin"):
                os.replace(image, data_dir / "packages" / image.name)
                images += 1
            os.replace(staged / DB_NAME, data_dir / DB_NAME)
        secure(data_dir)
    finally:
        lock.release()
    return {"restored": str(archive), "images": images, "kept": kept}


def _unpack(archive: Path, staged: Path) -> None:
    """The backup's platform.db and packages/*.bin into `staged` (a plain SQLite file is
    accepted too: the images in packages/ are then kept as they are)."""
    (staged / "packages").mkdir()
    try:
        with open(archive, "rb") as f:
            head = f.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise PlatformError(f"cannot read {archive}: {exc}") from None
    if head == SQLITE_HEADER:
        _copy(archive, staged / DB_NAME)
        return
    try:
        with tarfile.open(archive, "r") as tar:
            for member in tar.getmembers():
                name = member.name
                ok = name == DB_NAME or (name.startswith("packages/") and name.endswith(".bin")
                                         and "/" not in name[9:] and ".." not in name)
                if not ok or not member.isfile():
                    raise PlatformError(f"{archive}: unexpected entry {name!r} in the backup")
                src = tar.extractfile(member)
                assert src is not None
                _copy_stream(src, staged / name)
    except tarfile.TarError as exc:
        raise PlatformError(f"{archive} is not a backup made by `fota platform backup`: "
                            f"{exc}") from None
    if not (staged / DB_NAME).is_file():
        raise PlatformError(f"{archive} holds no {DB_NAME}")


def _copy(src: Path, dst: Path) -> None:
    with open(src, "rb") as f:
        _copy_stream(f, dst)


def _copy_stream(src: BinaryIO, dst: Path) -> None:
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        while chunk := src.read(1 << 16):
            out.write(chunk)
