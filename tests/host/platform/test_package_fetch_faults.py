"""Packages fetched from a URL (`POST /api/packages {"url"}`, `fota package create --url`)
against servers that misbehave: a body cut short is never stored, and slow servers neither
hold up the platform's task notices nor keep a fetch going for ever."""

from __future__ import annotations

import queue
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fota_host.platform.client import ApiClient
from fota_host.platform.validate import PlatformError
from platform_fakes import FakeDevice, fota, make_task, wait_for

Handler = Callable[[socket.socket, threading.Event], None]


class RawServer:
    """A real HTTP server on 127.0.0.1 answering every GET with `handler(conn, stop)`."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.stop = threading.Event()
        self.accepted = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._run, daemon=True).start()

    def url(self, name: str = "fw.bin") -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn:
                conn.settimeout(10)
                request = b""
                while b"\r\n\r\n" not in request:
                    data = conn.recv(4096)
                    if not data:
                        return
                    request += data
                self.handler(conn, self.stop)
        except OSError:
            pass  # the platform hung up: what a fetch that gave up does

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


def short_body(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\nhello")


def chunked_cut(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"5\r\nhello\r\n400\r\nwor")


def reset(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\nhello")
    stop.wait(1.0)  # the platform reads the 5 bytes first (a reset drops unread data)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def trickle(conn: socket.socket, stop: threading.Event) -> None:
    """A megabyte promised, one byte a second: done in 11 days."""
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
    while not stop.wait(1.0):
        conn.sendall(b"x")


@pytest.fixture
def servers() -> Iterator[Callable[[Handler], RawServer]]:
    made: list[RawServer] = []

    def make(handler: Handler) -> RawServer:
        made.append(RawServer(handler))
        return made[-1]
    yield make
    for server in made:
        server.close()


def package_files(data: Path) -> list[str]:
    """Everything in the packages folder, upload leftovers included."""
    return sorted(p.name for p in (data / "packages").iterdir())


def fetch_in_background(api: Any, url: str) -> queue.Queue[Any]:
    """POST the URL in a thread; its result (a package or the PlatformError) comes later."""
    done: queue.Queue[Any] = queue.Queue()

    def run() -> None:
        try:
            done.put(api.create_package(url=url, version="9.9.9"))
        except PlatformError as exc:
            done.put(exc)
    threading.Thread(target=run, daemon=True).start()
    return done


def test_a_body_cut_short_stores_nothing(embedded, servers, firmware: Path) -> None:
    embedded.start()
    api = embedded.api
    data = embedded.data
    cases = {"Content-Length short": (short_body, "after 5 bytes", "1000000 bytes"),
             "chunked cut off": (chunked_cut, "after", "the end of its body"),
             # the platform may not have read the headers before the reset dropped them
             "connection reset": (reset, "", "")}
    for what, (handler, got, promised) in cases.items():
        url = servers(handler).url()
        with pytest.raises(PlatformError) as err:
            api.create_package(url=url, version="7.0.8")
        assert err.value.status == 502, what
        message = str(err.value)
        assert url in message and got in message and promised in message, (what, message)
        assert "nothing stored" in message, message
        assert api.list_packages() == [], what
        assert package_files(data) == [], what
    # the CLI, through the running platform: a clear error line, no traceback, exit 2
    url = servers(short_body).url()
    proc = fota("package", "create", "--data", str(data), "--url", url, "--version", "7.0.8",
                ok=False)
    assert proc.returncode != 0
    assert proc.stderr.startswith("error: ") and url in proc.stderr, proc.stderr
    assert "1000000" in proc.stderr and "after 5 bytes" in proc.stderr, proc.stderr
    # no 7.0.8 package was left to refuse tasks of older versions
    make_task(api, firmware, ["dev-a"], version="2.0.0")
    assert [p["version"] for p in api.list_packages()] == ["2.0.0"]
    embedded.stop()
    embedded.proc = None
    # the CLI on the stopped platform fetches itself: the same refusal
    proc = fota("package", "create", "--data", str(data), "--url", url, "--version", "7.0.8",
                ok=False)
    assert proc.returncode != 0
    assert proc.stderr.startswith("error: ") and "after 5 bytes" in proc.stderr, proc.stderr
    listed = fota("package", "list", "--data", str(data), "--json")
    assert [p["version"] for p in listed] == ["2.0.0"]
    assert len(package_files(data)) == 1


def test_slow_fetches_do_not_hold_up_notices(embedded, servers, firmware: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Eight stalled fetches (enough to fill the default thread pool of a machine with up
    to four cores): a task started meanwhile still reaches its device, and one fetch more
    is refused at once rather than queued."""
    monkeypatch.setenv("FOTA_MAX_FETCHES", "8")
    # Neither the platform's fetch deadline nor the clients' timeouts may end a fetch
    # while this test waits on a loaded machine: the fetches must still be stalled.
    monkeypatch.setenv("FOTA_FETCH_DEADLINE", "900")
    embedded.start()
    api = embedded.api
    _, task = make_task(api, firmware, ["dev-a"])
    dev = FakeDevice("dev-a", embedded.broker).start()
    slow = servers(trickle)
    patient = ApiClient(embedded.proc.info, timeout=900)
    try:
        pending = [fetch_in_background(patient, slow.url(f"fw{i}.bin")) for i in range(8)]
        wait_for(lambda: slow.accepted >= 8, 30, what="eight fetches under way")
        # one more: refused at once (a short client timeout: queued would mean no answer)
        with pytest.raises(PlatformError, match="too many package fetches") as err:
            ApiClient(embedded.proc.info, timeout=20).create_package(url=slow.url(),
                                                                     version="9.9.9")
        assert err.value.status == 503
        api.start_task(task["id"])
        notice = dev.wait_notice(timeout=20)  # the trickles would take days
        assert notice["taskId"] == task["id"]
        assert all(p.empty() for p in pending)  # the fetches were still stalled meanwhile
    finally:
        dev.stop()


def test_a_fetch_that_never_ends_fails_at_its_deadline(embedded, servers, firmware: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOTA_FETCH_DEADLINE", "3")
    monkeypatch.setenv("FOTA_MAX_FETCHES", "1")
    embedded.start()
    api = embedded.api
    slow = servers(trickle)
    url = slow.url()
    result = fetch_in_background(api, url).get(timeout=60)
    assert isinstance(result, PlatformError), result
    assert result.status == 504
    assert url in str(result) and "not finished within the 3 s" in str(result), result
    assert api.list_packages() == [] and package_files(embedded.data) == []
    # its fetch slot is free again (one slot only): a good server's image is stored
    good = servers(lambda conn, stop: conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world"))
    pkg = api.create_package(url=good.url(), version="3.0.0")
    assert pkg["size"] == 11
    assert package_files(embedded.data) == [f"{pkg['id']}.bin"]
