"""The fleet-wide push rate of instances sharing a store (`FleetRate`, #20): a tick's budget
is counted at the instant its notices are recorded as sent, so no window of `window`
seconds of recorded notices ever holds more than a burst."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fota_host.platform.store import Store
from fota_host.platform.tasks_rate import FleetRate

RATE = 900.0  # notices a minute: a burst of 150 in 10 s


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path):
    target = tmp_path / "platform.db" if request.param == "sqlite" \
        else request.getfixturevalue("pg_url")
    s = Store(target)
    yield s
    s.close()


def _record(store: Store, sent: float, count: int, first: int = 1) -> None:
    for k in range(first, first + count):
        store.db.execute("INSERT INTO notices (subtask_id, task_id, device, sent)"
                         " VALUES (?, 1, ?, ?)", (k, f"d{k}", sent))
    store.commit()


def worst_window(store: Store, window: float) -> int:
    times = [r["sent"] for r in store.notices()]
    times.sort()
    return max((sum(1 for u in times if t - window < u <= t) for t in times), default=0)


def test_a_slow_tick_counts_the_window_of_the_instant_it_records(store: Store) -> None:
    """The CI failure of kind "the budget read the clock later than the notices record":
    a tick started at `at`, was slowed down (here: 5 s) before counting, and counted
    from the later clock reading; notices recorded 9.9 s before `at` then fell out of the
    count while still within 10 s of the tick's own, and 250 went out in 10 s."""
    rate = FleetRate(store, RATE)
    assert (rate.burst, rate.window) == (150, 10.0)
    at = time.time() - 5.0                 # the tick's instant, 5 s before this count
    _record(store, at - 9.9, 100)          # another instance's burst, 9.9 s before it
    budget = rate.budget(at)
    assert budget == 50
    _record(store, at, budget, first=101)  # what the tick sends, recorded at `at`
    assert worst_window(store, rate.window) == rate.burst
    assert rate.budget(at + 0.05) == 0     # the next tick: nothing until the window moves
    assert rate.budget(at + 0.15) == 100   # the 100 have aged out (sent > at - 9.85)
    assert rate.budget(at + 10.0) == 150   # and so have the 50


def test_notices_recorded_after_the_instant_count_too(store: Store) -> None:
    """An instance whose clock is a little ahead records notices "in the future" of this
    one's tick: they are counted, not left out by the window's end."""
    rate = FleetRate(store, RATE)
    at = time.time()
    _record(store, at + 0.5, 120)
    assert rate.budget(at) == 30
