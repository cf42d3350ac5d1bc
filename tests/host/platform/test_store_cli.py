"""`fota platform serve` and its store, through the real command: a bad or unreachable
`--db` is one clear line and a non-zero exit; a second instance on one SQLite data
folder is refused; with `--db postgresql://...` a device is upgraded end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fota_host.platform.client import ApiClient, read_service_info
from helpers import free_port, wait_for
from platform_fakes import FakeDevice, wait_device_state


def fota(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from fota_host.cli import main; main()",
                           *args], capture_output=True, text=True, timeout=timeout)


def serve(data: Path, *more: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return fota("platform", "serve", "--data", str(data), "--http-port", "0", "--mqtt-port",
                "0", *more, timeout=timeout)


def _one_clear_line(proc: subprocess.CompletedProcess, *words: str) -> str:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    for word in words:
        assert word in line, line
    return line


@pytest.mark.parametrize("url,words", [
    ("mysql://u:p@127.0.0.1/db", ("must be a PostgreSQL URL", "postgresql://USER:PASS@HOST")),
    ("postgresql://u:p@127.0.0.1:5432/", ("names no database",)),
    ("postgresql://u:p@127.0.0.1:port/db", ("bad port",)),
])
def test_a_malformed_db_url_is_refused_with_its_form(tmp_path: Path, url: str,
                                                    words: tuple[str, ...]) -> None:
    _one_clear_line(serve(tmp_path / "data", "--db", url), *words)


def test_an_unreachable_or_refused_database_says_what_to_check(tmp_path: Path,
                                                              pg_server) -> None:
    nobody = f"postgresql://postgres:pw@127.0.0.1:{free_port()}/db"
    wrong_password = pg_server.url("postgres", password="not-the-password")
    no_database = pg_server.url("no_such_database")
    for url, word in ((nobody, "Connection refused"),
                      (wrong_password, "password authentication failed"),
                      (no_database, '"no_such_database" does not exist')):
        line = _one_clear_line(serve(tmp_path / "data", "--db", url, "--broker",
                                     f"mqtt://127.0.0.1:{free_port()}"),
                               "cannot open the PostgreSQL store", word,
                               "check that the server runs")
        assert "not-the-password" not in line and pg_server.password not in line


def test_a_share_group_without_the_postgresql_store_is_refused(tmp_path: Path) -> None:
    """A SQLite instance would take part of the cluster's device messages into its file."""
    data = tmp_path / "data"
    proc = serve(data, "--broker", f"mqtt://127.0.0.1:{free_port()}", "--share-group", "fota")
    assert proc.returncode == 2
    _one_clear_line(proc, "--share-group needs the shared PostgreSQL store",
                    "must share one database")
    assert not (data / "platform.db").exists()


def test_a_postgresql_store_without_an_external_broker_is_refused(tmp_path: Path) -> None:
    """Instances each on an embedded broker of their own would never reach the devices."""
    proc = serve(tmp_path / "data", "--db", "postgresql://u:p@127.0.0.1:5432/fota")
    assert proc.returncode == 2
    _one_clear_line(proc, "must share one external broker", "--broker mqtt://HOST:PORT")


def test_an_instance_without_the_shared_package_folder_is_refused(
        tmp_path: Path, pg_url: str, firmware: Path) -> None:
    """Its notices would name files it does not hold (404 for the devices)."""
    from fota_host.platform.core import Platform
    from fota_host.platform.options import Settings

    first = Platform(tmp_path / "node1", Settings(db=pg_url, packages_dir=str(tmp_path / "shared")))
    try:
        first.packages.add_package_file(firmware, version="2.0.0")
    finally:
        first.close()
    other = tmp_path / "elsewhere"
    proc = serve(tmp_path / "node2", "--db", pg_url, "--broker",
                 f"mqtt://127.0.0.1:{free_port()}", "--packages", str(other))
    assert proc.returncode == 2
    _one_clear_line(proc, f"packages folder {other}", "lacks 1 of the 1 package files",
                    "must share one folder (--packages")
    assert not (tmp_path / "node2" / "service.json").exists()


def test_a_second_instance_on_one_sqlite_data_folder_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = subprocess.Popen(
        [sys.executable, "-c", "from fota_host.cli import main; main()", "platform", "serve",
         "--data", str(data), "--http-port", "0", "--mqtt-port", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        info = wait_for(lambda: (data / "service.json").exists() and
                        json.loads((data / "service.json").read_text()), timeout=60,
                        what="the first service")
        second = serve(data)
        _one_clear_line(second, "in use by a running `fota platform serve`",
                        f"pid {first.pid}")
        assert json.loads((data / "service.json").read_text()) == info  # left alone
        assert first.poll() is None
    finally:
        first.terminate()
        first.wait(30)


def test_a_device_is_upgraded_with_the_store_in_postgresql(tmp_path: Path, pg_url: str,
                                                           mosquitto, firmware: Path) -> None:
    """`fota platform serve --db URL --broker URL --share-group g` end to end."""
    data = tmp_path / "data"
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [sys.executable, "-c", "from fota_host.cli import main; main()", "platform", "serve",
         "--data", str(data), "--http-port", "0", "--db", pg_url, "--broker", mosquitto.url,
         "--share-group", "g", "--packages", str(tmp_path / "images")],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        info = wait_for(lambda: read_service_info(data), timeout=60, what="the service")
        api = ApiClient(info)
        pkg = api.create_package(file=str(firmware), version="2.0.0")
        assert (tmp_path / "images" / f"{pkg['id']}.bin").is_file()
        task = api.create_task(package=pkg["id"], name="pg")
        api.add_devices(task["id"], ["pg-1"])
        dev = FakeDevice("pg-1", mosquitto.url).start()
        try:
            api.start_task(task["id"])
            image = dev.upgrade(dev.wait_notice(timeout=30))
            assert image == firmware.read_bytes()
            wait_device_state(api, task["id"], "pg-1", "succeeded")
        finally:
            dev.stop()
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
    # the rows are in PostgreSQL, not in the data folder
    assert not (data / "platform.db").exists()
    import psycopg

    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT state FROM subtasks").fetchall() == [("succeeded",)]
        assert conn.execute("SELECT COUNT(*) FROM notices").fetchone() == (1,)


def test_a_command_on_a_postgresql_data_folder_without_its_service_says_so(
        tmp_path: Path, pg_url: str) -> None:
    """No empty SQLite store is started beside a PostgreSQL one."""
    from fota_host.platform.core import Platform
    from fota_host.platform.options import Settings

    data = tmp_path / "data"
    Platform(data, Settings(db=pg_url)).close()
    proc = fota("task", "list", "--data", str(data))
    _one_clear_line(proc, "store in PostgreSQL", "--db URL")
    assert not (data / "platform.db").exists()
    assert pg_url.split("@")[0].split(":")[-1] not in proc.stderr  # the password
