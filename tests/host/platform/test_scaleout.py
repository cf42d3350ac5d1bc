"""Several `fota platform serve` instances on one PostgreSQL database, one mosquitto and one
package folder, with a swarm of a few hundred devices (`fota sim swarm`'s run_swarm):

- every device upgraded exactly once, no notice sent twice (the swarm's count and the
  store's `notices` rows), the push rate held for the whole fleet (from the notice times
  the store recorded), the device messages shared among the instances;
- one instance killed with SIGKILL mid-rollout: the others finish, nothing lost;
- PostgreSQL restarted mid-rollout: the instances reconnect and finish;
- any instance serves a download another granted, and cuts off a cancelled one.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from fota_host.platform.options import Settings
from fota_host.platform.process import PlatformProcess, start_platform
from platform_fakes import FakeDevice, Mosquitto, http_get, wait_device_state, wait_for

pytestmark = [
    pytest.mark.skipif(not hasattr(Settings, "db"), reason="needs the PostgreSQL store (#20)"),
    pytest.mark.timeout(900),
]

RATE = 900.0  # notices a minute: bursts of 150 in 10 s, so 300 devices need two bursts
SWARM = 300


class Cluster:
    """N platform instances on one database, one mosquitto, one package folder."""

    def __init__(self, tmp: Path, db: str, n: int, **options: Any) -> None:
        (tmp / "mq").mkdir()
        # a raised queue: what the broker holds for an instance that died, until taken over
        self.mosquitto = Mosquitto(tmp / "mq", extra_conf="max_queued_messages 100000\n")
        self.mosquitto.start()
        self.db = db
        self.procs: list[PlatformProcess] = []
        self.options = {"broker": self.mosquitto.url, "db": db, "http_port": 0,
                        "packages_dir": str(tmp / "packages"), "push_rate": RATE,
                        "device_timeout": 300, "timeout": 60, **options}
        for k in range(n):
            self.procs.append(start_platform(tmp / f"instance{k}", **self.options))

    @property
    def api(self) -> Any:
        return self.procs[0].client()

    def sql(self, query: str, *args: Any) -> list[tuple]:
        import psycopg

        with psycopg.connect(self.db, connect_timeout=10) as conn:
            return conn.execute(query, args).fetchall()

    def stop(self) -> None:
        for p in self.procs:
            p.stop()
        self.mosquitto.stop()


@pytest.fixture
def cluster_factory(tmp_path: Path, pg_url: str):
    made: list[Cluster] = []

    def make(n: int, **options: Any) -> Cluster:
        c = Cluster(tmp_path, pg_url, n, **options)
        made.append(c)
        return c

    yield make
    for c in made:
        c.stop()


class Swarm(threading.Thread):
    """run_swarm in a thread; `result` once it ended."""

    def __init__(self, broker: str, count: int, settle: float = 1.0) -> None:
        super().__init__(daemon=True)
        from fota_host.sim.swarm import SwarmOptions

        self.opts = SwarmOptions(count=count, broker=broker, version="1.0.0",
                                 until_version="2.0.0", timeout=600, settle=settle)
        self.stop_event = threading.Event()
        self.result: Any = None

    def run(self) -> None:
        from fota_host.sim.swarm import run_swarm

        self.result = run_swarm(self.opts, stop=self.stop_event)

    def finish(self, timeout: float = 660) -> Any:
        self.join(timeout)
        if self.is_alive():
            self.stop_event.set()
            self.join(30)
        assert self.result is not None, "the swarm did not end"
        return self.result


def start_rollout(cluster: Cluster, tmp: Path, count: int,
                  settle: float = 1.0) -> tuple[int, Swarm]:
    """The swarm connected and informed (every device known), then a task for all of it."""
    image = tmp / "app-2.0.0.bin"
    image.write_bytes(os.urandom(24_000))
    api = cluster.api
    pkg = api.create_package(file=str(image), version="2.0.0", product="swarm")
    task = api.create_task(package=pkg["id"], name="swarm to 2.0.0")
    devices = [f"swarm-{i:05d}" for i in range(1, count + 1)]
    results = api.add_devices(task["id"], devices)
    assert all(r["ok"] for r in results)
    swarm = Swarm(cluster.mosquitto.url, count, settle)
    swarm.start()
    wait_for(lambda: cluster.sql("SELECT COUNT(*) FROM devices")[0][0] >= count, 300, 0.5,
             what="every swarm device's first inform")
    api.start_task(task["id"])
    return task["id"], swarm


def succeeded(cluster: Cluster, task_id: int) -> int:
    return cluster.sql("SELECT COUNT(*) FROM subtasks WHERE task_id = %s AND state = "
                       "'succeeded'", task_id)[0][0]


def check_once_each(cluster: Cluster, task_id: int, count: int, result: Any) -> None:
    assert result.to_json()["upgraded"] == count, result.to_json()
    assert result.failed == 0 and result.duplicate_notices == 0, result.to_json()
    wait_for(lambda: succeeded(cluster, task_id) == count, 120, 0.5,
             what="every sub-task succeeded in the store")
    twice = cluster.sql("SELECT subtask_id, COUNT(*) FROM notices WHERE task_id = %s "
                        "GROUP BY subtask_id HAVING COUNT(*) > 1", task_id)
    assert twice == []
    notified = cluster.sql("SELECT COUNT(DISTINCT subtask_id) FROM notices WHERE task_id = %s",
                           task_id)[0][0]
    assert notified == count


def check_push_rate(cluster: Cluster, task_id: int) -> None:
    """No 10 s window of the store's notice times holds more than a burst (RATE / 6):
    three instances each keeping the rate on their own would send up to three."""
    times = [r[0] for r in cluster.sql("SELECT sent FROM notices WHERE task_id = %s "
                                       "ORDER BY sent", task_id)]
    burst, window = int(RATE / 6), 10.0
    j = 0
    worst = 0
    for i, t in enumerate(times):
        while times[j] <= t - window:
            j += 1
        worst = max(worst, i - j + 1)
    assert worst <= burst + 1, f"{worst} notices within {window} s (the fleet's burst {burst})"


def reports_by_instance(proc: PlatformProcess) -> float:
    token = (proc.data_dir / "metrics.token").read_text().strip()
    status, body, _ = http_get(proc.api + "/metrics", {"Authorization": f"Bearer {token}"})
    assert status == 200
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.decode().splitlines()
               if line.startswith("fota_reports_total{"))


def test_two_instances_share_a_rollout(cluster_factory, tmp_path: Path) -> None:
    cluster = cluster_factory(2)
    task_id, swarm = start_rollout(cluster, tmp_path, SWARM)
    result = swarm.finish()
    check_once_each(cluster, task_id, SWARM, result)
    check_push_rate(cluster, task_id)
    # the shared subscription gave each instance a part of the device messages
    shares = [reports_by_instance(p) for p in cluster.procs]
    assert all(s > 0 for s in shares), shares


def test_three_instances_one_killed_mid_rollout(cluster_factory, tmp_path: Path) -> None:
    cluster = cluster_factory(3)
    task_id, swarm = start_rollout(cluster, tmp_path, SWARM)
    wait_for(lambda: succeeded(cluster, task_id) >= SWARM // 4, 300, 0.2,
             what="a quarter of the rollout")
    cluster.procs[1].kill()
    result = swarm.finish()
    check_once_each(cluster, task_id, SWARM, result)
    check_push_rate(cluster, task_id)


def test_postgres_restart_mid_rollout(cluster_factory, tmp_path: Path, pg_server) -> None:
    # A download asked for while the database is down fails (the device reports it); the
    # task's retries send those devices a new notice once it is back.
    cluster = cluster_factory(2, retries=3, retry_backoff=1.0)
    task_id, swarm = start_rollout(cluster, tmp_path, 200, settle=30.0)
    wait_for(lambda: succeeded(cluster, task_id) >= 50, 300, 0.2, what="a quarter done")
    pg_server.restart()
    result = swarm.finish()
    assert result.to_json()["upgraded"] == 200, result.to_json()
    wait_for(lambda: succeeded(cluster, task_id) == 200, 120, 0.5,
             what="every sub-task succeeded in the store")
    # no notice beyond one per attempt (a retry is a new attempt, with its own notice)
    extra = cluster.sql("SELECT n.subtask_id FROM (SELECT subtask_id, COUNT(*) AS c FROM "
                        "notices WHERE task_id = %s GROUP BY subtask_id) n JOIN subtasks s "
                        "ON s.id = n.subtask_id WHERE n.c > s.attempts + 1", task_id)
    assert extra == []


def _on(proc: PlatformProcess, url: str) -> str:
    """The same download address on another instance's HTTP server."""
    parts = urllib.parse.urlsplit(url)
    api = urllib.parse.urlsplit(proc.api)
    return urllib.parse.urlunsplit(parts._replace(netloc=api.netloc))


def test_any_instance_serves_and_cuts_off_a_download(cluster_factory, tmp_path: Path) -> None:
    cluster = cluster_factory(2)
    image = tmp_path / "big-2.0.0.bin"
    image.write_bytes(os.urandom(16 << 20))
    a, b = cluster.procs
    api_a = a.client()
    pkg = api_a.create_package(file=str(image), version="2.0.0", product="demo")
    task = api_a.create_task(package=pkg["id"], name="big")
    api_a.add_devices(task["id"], ["dev-x"])
    dev = FakeDevice("dev-x", cluster.mosquitto.url).start()
    try:
        api_a.start_task(task["id"])
        notice = dev.wait_notice(timeout=60)
        url = dev.download_url(notice)
        for proc in (a, b):  # either instance serves it, whichever sent the notice
            status, body, _ = http_get(_on(proc, url), {"Range": "bytes=0-99"})
            assert status == 206 and len(body) == 100
        # a download from B that reads slowly; the cancel goes through A
        parts = urllib.parse.urlsplit(_on(b, url))
        sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        sock.sendall(f"GET {parts.path}?{parts.query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        got = sock.recv(65536)
        assert got.startswith(b"HTTP/1.1 200")
        api_a.cancel(task["id"], devices=["dev-x"])
        wait_device_state(api_a, task["id"], "dev-x", "cancelled", timeout=30)
        total, deadline = len(got), time.monotonic() + 60
        ended = False
        while time.monotonic() < deadline:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                ended = True
                break
            if not data:
                ended = True
                break
            total += len(data)
            time.sleep(0.05)
        sock.close()
        assert ended and total < image.stat().st_size, (ended, total)
        status, _, _ = http_get(_on(b, url), {"Range": f"bytes={total}-"})
        assert status == 403
    finally:
        dev.stop()


def _metrics(proc: PlatformProcess) -> tuple[int, str]:
    token = (proc.data_dir / "metrics.token").read_text().strip()
    status, body, _ = http_get(proc.api + "/metrics", {"Authorization": f"Bearer {token}"})
    return status, body.decode()


def test_database_down_is_503_and_metrics_still_answer(cluster_factory, pg_server) -> None:
    """While PostgreSQL is down the API says the service is unavailable (503, naming the
    database; not "disk full"), /metrics still answers with fota_store_up 0, and both
    recover by themselves once the database is back."""
    cluster = cluster_factory(1)
    proc = cluster.procs[0]
    token = proc.info["admin_token"]
    auth = {"Authorization": f"Bearer {token}"}
    assert http_get(proc.api + "/api/tasks", auth)[0] == 200
    pg_server.stop()
    try:
        status, body, _ = http_get(proc.api + "/api/tasks", auth)
        assert status == 503, (status, body)
        assert b"PostgreSQL" in body and b"disk full" not in body
        status, text = _metrics(proc)
        assert status == 200 and 'fota_store_up{instance=' in text
        assert any(line.startswith("fota_store_up{") and line.endswith(" 0.0")
                   for line in text.splitlines()), text
    finally:
        pg_server.start()
    wait_for(lambda: http_get(proc.api + "/api/tasks", auth)[0] == 200, 60, 0.5,
             what="the API answering again once PostgreSQL is back")
    status, text = _metrics(proc)
    assert any(line.startswith("fota_store_up{") and line.endswith(" 1.0")
               for line in text.splitlines()), text
