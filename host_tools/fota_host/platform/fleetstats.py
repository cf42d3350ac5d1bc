"""Statistics of a task and its waves: counts by state, success rate, median and 95th
percentile update duration (from the last notice to the end, succeeded devices), failures
grouped by reason; and the versions running across the fleet."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

_RETRY = re.compile(r"^retry \d+/\d+ in [\d.]+s: ")
_NUMBERS = re.compile(r"\d+")


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100) of `values`, None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def median(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def reason(desc: str) -> str:
    """A failure's reason, grouped: the retry prefix off, at most 120 characters."""
    return _RETRY.sub("", desc or "")[:120] or "(no reason given)"


def summarize(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """rows: sub-tasks with state, desc, notified, updated."""
    counts: Counter[str] = Counter()
    durations: list[float] = []
    failures: Counter[str] = Counter()
    for r in rows:
        counts[r["state"]] += 1
        if r["state"] == "succeeded" and r.get("notified"):
            durations.append(max(0.0, r["updated"] - r["notified"]))
        elif r["state"] in ("failed", "timed_out"):
            failures[reason(r["desc"])] += 1
    succeeded = counts["succeeded"]
    failed = counts["failed"] + counts["timed_out"]
    ended = succeeded + failed
    p50, p95 = median(durations), percentile(durations, 95)
    return {
        "devices": sum(counts.values()), "counts": dict(sorted(counts.items())),
        "succeeded": succeeded, "failed": failed, "ended": ended,
        "success_rate": round(succeeded / ended, 4) if ended else None,
        "duration_median_s": None if p50 is None else round(p50, 3),
        "duration_p95_s": None if p95 is None else round(p95, 3),
        "failures": [{"reason": k, "devices": n} for k, n in failures.most_common()],
    }


def task_stats(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The task's statistics and, under `waves`, each wave's (by wave number)."""
    out = summarize(rows)
    waves: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        if r.get("wave"):
            waves.setdefault(r["wave"], []).append(r)
    out["waves"] = [{"index": w, **summarize(waves[w])} for w in sorted(waves)]
    return out


def version_key(version: str) -> tuple[int, ...]:
    """A version's numbers, in order, for comparing (`1.10.0` > `1.9.3`)."""
    return tuple(int(n) for n in _NUMBERS.findall(version or ""))


def is_older(version: str, than: str) -> bool:
    a, b = version_key(version), version_key(than)
    return bool(a and b) and a < b


def fleet_versions(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """rows: (version, devices); newest version first."""
    total = sum(r["devices"] for r in rows)
    ordered = sorted(rows, key=lambda r: (version_key(r["version"]), r["version"]), reverse=True)
    return {"devices": total, "versions": [
        {"version": r["version"] or None, "devices": r["devices"],
         "share": round(r["devices"] / total, 4) if total else 0.0} for r in ordered]}
