"""The data folder's store (#12.6, #11.8): a damaged platform.db is refused with the way to
restore it, backup and restore work (also while the service runs), and a second platform on
the same folder is refused naming the running one and leaves its files alone."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from fota_host.platform.process import start_platform
from platform_fakes import FakeDevice, make_task, wait_device_state


def fota(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from fota_host.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=60)


def _fill(embedded, firmware: Path) -> tuple[dict, dict]:
    """A store worth keeping: a package, a task with a device that succeeded."""
    proc = embedded.start()
    api = embedded.api
    pkg, task = make_task(api, firmware, ["keep-1"], "kept")
    dev = FakeDevice("keep-1", proc.broker).start()
    try:
        api.start_task(task["id"])
        dev.upgrade(dev.wait_notice())
        wait_device_state(api, task["id"], "keep-1", "succeeded")
    finally:
        dev.stop()
    return pkg, task


def _refused(embedded) -> str:
    with pytest.raises(RuntimeError) as err:
        embedded.start()
    return str(err.value)


def _damage_page(db: Path) -> None:
    """Overwrite one page in the middle of the file (the other pages stay sound)."""
    size = db.stat().st_size
    assert size >= 3 * 4096
    with open(db, "r+b") as f:
        f.seek((size // 4096 // 2) * 4096)
        f.write(os.urandom(4096))


@pytest.mark.parametrize("damage", ["page", "header", "empty", "missing"])
def test_damaged_store_is_refused_with_the_way_back(embedded, firmware: Path,
                                                    damage: str) -> None:
    _fill(embedded, firmware)
    embedded.proc.stop()
    db = embedded.data / "platform.db"
    # grow the store so a page in the middle holds rows, then checkpoint it into the file
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("CREATE TABLE IF NOT EXISTS filler (x BLOB)")
    con.executemany("INSERT INTO filler VALUES (?)", [(os.urandom(2000),)] * 40)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    if damage == "page":
        _damage_page(db)
    elif damage == "header":
        with open(db, "r+b") as f:
            f.write(b"garbage garbage!")
    elif damage == "empty":
        db.write_bytes(b"")
    else:
        db.unlink()
    before = sorted(p.name for p in embedded.data.iterdir())
    message = _refused(embedded)
    assert "is damaged" in message and "fota platform restore" in message, message
    assert "Traceback" not in message
    # nothing touched: the damaged file is still there for the operator
    assert sorted(p.name for p in embedded.data.iterdir()) == before


def test_backup_while_running_then_restore_a_damaged_store(embedded, firmware: Path,
                                                           tmp_path: Path) -> None:
    pkg, task = _fill(embedded, firmware)
    data = str(embedded.data)
    backup = tmp_path / "platform-backup.tar"
    done = fota("platform", "backup", "--data", data, "-o", str(backup))  # service running
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["images"] == 1 and backup.stat().st_mode & 0o077 == 0
    # restore refuses while the service runs, naming it
    busy = fota("platform", "restore", "--data", data, str(backup))
    assert busy.returncode != 0 and f"pid {embedded.proc.proc.pid}" in busy.stderr
    embedded.proc.stop()
    _damage_page(embedded.data / "platform.db")
    (embedded.data / "packages" / f"{pkg['id']}.bin").unlink()  # images lost too
    assert "is damaged" in _refused(embedded)
    done = fota("platform", "restore", "--data", data, str(backup))
    assert done.returncode == 0, done.stderr
    kept = json.loads(done.stdout)["kept"]
    assert kept and all((embedded.data / k).exists() for k in kept)  # the damaged one kept
    embedded.start()
    api = embedded.api
    assert [p["id"] for p in api.list_packages()] == [pkg["id"]]
    detail = api.get_task(task["id"])
    assert [(d["device"], d["state"]) for d in detail["devices"]] == [("keep-1", "succeeded")]
    assert (embedded.data / "packages" / f"{pkg['id']}.bin").read_bytes() == \
        firmware.read_bytes()


def test_restore_refuses_a_damaged_backup(tmp_path: Path, embedded, firmware: Path) -> None:
    _fill(embedded, firmware)
    embedded.proc.stop()
    bad = tmp_path / "bad.db"
    shutil.copy(embedded.data / "platform.db", bad)
    _damage_page(bad)
    before = (embedded.data / "platform.db").read_bytes()
    done = fota("platform", "restore", "--data", str(embedded.data), str(bad))
    assert done.returncode != 0 and "damaged" in done.stderr
    assert (embedded.data / "platform.db").read_bytes() == before


def test_second_serve_on_the_same_folder_is_refused(embedded, firmware: Path) -> None:
    first = embedded.start()
    info_before = (embedded.data / "service.json").read_text()
    with pytest.raises(RuntimeError) as err:
        start_platform(embedded.data, timeout=20)
    message = str(err.value)
    assert f"pid {first.proc.pid}" in message and first.api in message, message
    # the running one is untouched and still serves
    assert (embedded.data / "service.json").read_text() == info_before
    assert first.proc.poll() is None
    assert first.client().create_package(file=str(firmware), version="2.0.0")["size"] > 0
    # and the CLI in the foreground says the same
    done = fota("platform", "serve", "--data", str(embedded.data), "--http-port", "0",
                "--mqtt-port", "0")
    assert done.returncode != 0 and f"pid {first.proc.pid}" in done.stderr
    assert (embedded.data / "service.json").read_text() == info_before
