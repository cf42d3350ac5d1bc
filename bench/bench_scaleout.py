"""Scale-out bench (#20): the platform on PostgreSQL and mosquitto with a `fota sim swarm`.

- swarm_10k_seconds: `task start` to every one of 10 000 sub-tasks succeeded (the store's
  count), one platform instance, PostgreSQL + mosquitto, a small image.
- platform_cpu_ms_per_device: the platform's CPU time (user + system, psutil, every
  instance) from the swarm's first connection to the last success, per device upgrade
  handled (inform, notice, progress reports, download check, final inform). PostgreSQL's and
  mosquitto's CPU are not in it. The capacity figure: devices a core handles a second is
  1000 / this.
- scaleout_duplicates: with three instances and one killed (SIGKILL) mid-rollout, notices
  sent twice (the store's `notices` rows beyond one per sub-task) plus reports applied twice
  (progress reports the store counted beyond those the swarm sent, when the swarm counts
  them: `progress_sent`). Goal 0. scaleout_duplicate_notices_seen is the swarm's own count
  of notices it got twice, scaleout_upgraded how many devices ended on the new version.

Env: SCALEOUT_BENCH_N (10000), SCALEOUT_BENCH_KILL_N (3000 devices for the kill run),
SCALEOUT_BENCH_PUSH_RATE (notices a minute, default 6000: 100 a second, above what one
instance on this 2-core machine sends, in bursts of 1000).
"""

from __future__ import annotations

import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

N = int(os.environ.get("SCALEOUT_BENCH_N", "10000"))
KILL_N = int(os.environ.get("SCALEOUT_BENCH_KILL_N", "3000"))
PUSH_RATE = float(os.environ.get("SCALEOUT_BENCH_PUSH_RATE", "6000"))
IMAGE_SIZE = 16 * 1024


def _log(msg: str) -> None:
    print(f"  scaleout: {msg}", file=sys.stderr, flush=True)


def _raise_fd_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # mosquitto inherits it
    if hard < need:
        raise RuntimeError(f"the bench needs {need} file descriptors (ulimit -Hn is {hard})")


_conns: dict[str, Any] = {}


def _sql(db: str, query: str, *args: Any) -> list[tuple]:
    """One query on a connection kept per database (a busy server is slow to accept new
    ones); a failed connection is opened again next time."""
    import psycopg

    conn = _conns.get(db)
    if conn is None or conn.closed:
        conn = _conns[db] = psycopg.connect(db, connect_timeout=60, autocommit=True)
    try:
        return conn.execute(query, args).fetchall()
    except psycopg.OperationalError:
        conn.close()
        raise


class _Cpu:
    """CPU seconds of a set of processes, read often enough that a killed one's last
    reading counts."""

    def __init__(self, procs: list[Any]) -> None:
        self.procs = procs
        self.last: dict[int, float] = {}

    def sample(self) -> float:
        import psutil

        for p in self.procs:
            if p.proc is None:
                continue
            try:
                t = psutil.Process(p.proc.pid).cpu_times()
                self.last[p.proc.pid] = t.user + t.system
            except Exception:
                pass
        return sum(self.last.values())


class _Run:
    """One rollout: instances on a fresh database, a swarm, a task for all of it."""

    def __init__(self, work: Path, pg: Any, mosquitto: Any, n: int, instances: int) -> None:
        from fota_host.platform.process import start_platform

        self.work, self.n = work, n
        self.db = pg.new_database()
        self.mosquitto = mosquitto
        opts = {"broker": mosquitto.url, "db": self.db, "http_port": 0,
                "packages_dir": str(work / "packages"), "push_rate": PUSH_RATE,
                "device_timeout": 600, "token_ttl": 7200, "timeout": 120,
                "max_per_address": 2048}  # the whole swarm comes from 127.0.0.1
        self.procs = [start_platform(work / f"i{k}", **opts) for k in range(instances)]
        self.cpu = _Cpu(self.procs)
        self.swarm_result: Any = None

    def succeeded(self) -> int:
        return _sql(self.db, "SELECT COUNT(*) FROM subtasks WHERE task_id = %s AND state = "
                    "'succeeded'", self.task_id)[0][0]

    def prepare(self) -> None:
        api = self.procs[0].client()
        image = self.work / "app-2.0.0.bin"
        image.write_bytes(os.urandom(IMAGE_SIZE))
        pkg = api.create_package(file=str(image), version="2.0.0", product="swarm")
        task = api.create_task(package=pkg["id"], name="swarm")
        self.task_id = task["id"]
        ids = [f"swarm-{i:05d}" for i in range(1, self.n + 1)]
        for k in range(0, len(ids), 1000):
            api.add_devices(self.task_id, ids[k:k + 1000])
        self.api = api

    def start_swarm(self) -> None:
        from fota_host.sim.swarm import SwarmOptions, run_swarm

        opts = SwarmOptions(count=self.n, broker=self.mosquitto.url, version="1.0.0",
                            until_version="2.0.0", timeout=1800)

        def go() -> None:
            self.swarm_result = run_swarm(opts)

        self.swarm = threading.Thread(target=go, daemon=True)
        self.swarm.start()

    def wait(self, predicate: Any, timeout: float, what: str) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                if predicate():
                    return
            except psycopg.OperationalError as exc:  # asked again at the next poll
                _log(f"polling the store: {exc}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            self.cpu.sample()
            time.sleep(1.0)

    def devices_known(self) -> int:
        return _sql(self.db, "SELECT COUNT(*) FROM devices")[0][0]

    def stop(self) -> None:
        conn = _conns.pop(self.db, None)
        if conn is not None:
            conn.close()
        for p in self.procs:
            p.stop()


def _single(work: Path, pg: Any, mosquitto: Any) -> dict[str, Any]:
    run = _Run(work / "single", pg, mosquitto, N, 1)
    try:
        run.prepare()
        cpu0 = run.cpu.sample()
        run.start_swarm()
        run.wait(lambda: run.devices_known() >= N, 900, "every device's first inform")
        _log(f"{N} devices connected and informed")
        started = time.monotonic()
        run.api.start_task(run.task_id)
        run.wait(lambda: run.succeeded() >= N, 1800, "every sub-task succeeded")
        seconds = time.monotonic() - started
        cpu = run.cpu.sample() - cpu0
        run.swarm.join(120)
        _log(f"{N} upgraded in {seconds:.1f} s, platform CPU {cpu:.1f} s")
        return {"swarm_10k_seconds" if N == 10000 else f"swarm_{N}_seconds": round(seconds, 1),
                "platform_cpu_ms_per_device": round(cpu * 1000 / N, 3),
                "swarm_kib_per_device": getattr(run.swarm_result, "kib_per_device", None)}
    finally:
        run.stop()


def _killed(work: Path, pg: Any, mosquitto: Any) -> dict[str, Any]:
    run = _Run(work / "kill", pg, mosquitto, KILL_N, 3)
    try:
        run.prepare()
        run.start_swarm()
        run.wait(lambda: run.devices_known() >= KILL_N, 900, "every device's first inform")
        run.api.start_task(run.task_id)
        run.wait(lambda: run.succeeded() >= KILL_N // 3, 1800, "a third of the rollout")
        run.procs[1].kill()
        _log(f"instance 1 killed at {run.succeeded()} of {KILL_N} succeeded")
        run.wait(lambda: run.succeeded() >= KILL_N, 1800, "every sub-task succeeded")
        run.swarm.join(300)
        notices = _sql(run.db, "SELECT COUNT(*) - COUNT(DISTINCT subtask_id) FROM notices "
                       "WHERE task_id = %s", run.task_id)[0][0]
        counted = _sql(run.db, "SELECT COALESCE(SUM(reports), 0) FROM subtasks WHERE "
                       "task_id = %s", run.task_id)[0][0]
        result = run.swarm_result
        stats = result.to_json() if result is not None else {}
        sent = stats.get("progress_sent")
        reports = max(0, int(counted) - int(sent)) if sent is not None else 0
        _log(f"notices twice {notices}, progress counted {counted}, sent {sent}")
        figures = {"scaleout_duplicates": int(notices) + reports,
                   "scaleout_notices_twice": int(notices),
                   "scaleout_duplicate_notices_seen": stats.get("duplicate_notices"),
                   "scaleout_upgraded": stats.get("upgraded"),
                   "scaleout_devices": KILL_N}
        if sent is None:
            figures["scaleout_reports_twice_unmeasured"] = True
        else:
            figures["scaleout_reports_twice"] = reports
        return figures
    finally:
        run.stop()


def run() -> dict[str, Any]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from helpers import Mosquitto
    from pgserver import PgServer

    _raise_fd_limit(N + 2000)
    work = Path(tempfile.mkdtemp(prefix="fota-scaleout-bench-"))
    (work / "mq").mkdir()
    mosquitto = Mosquitto(work / "mq", extra_conf="max_queued_messages 100000\n"
                          "max_connections -1\n").start()
    figures: dict[str, Any] = {}
    try:
        with PgServer() as pg:
            figures.update(_single(work, pg, mosquitto))
            figures.update(_killed(work, pg, mosquitto))
    finally:
        mosquitto.stop()
    return figures


if __name__ == "__main__":
    import json

    print(json.dumps(run()))
