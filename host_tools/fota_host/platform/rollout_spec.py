"""What a rollout asks for (issue #16): the options of a create-task request checked and
stored as a spec (`parse_spec`), wave sizes, the failure limit. No store, no clock: the
rules that act on a spec are `rollouts.py`'s.

Options (`SPEC_KEYS`): `waves` (sizes `N` or `P%`, the last one takes the rest),
`max_failures` (`N` or `P%` of the ended devices) counted after `min_ended` ended ones,
`on_failure` (pause or stop), `approve_waves`, `from_versions`, `groups`, `continuous`,
`windows` (maintenance windows, `windows.py`), `allow_downgrade`. What fails a task:
`wave_failure` (a wave below the success threshold), `threshold_failure` (max_failures).
"""

from __future__ import annotations

import math
from typing import Any

from . import windows
from .validate import PlatformError, check_group_name, text

SPEC_KEYS = ("waves", "max_failures", "min_ended", "on_failure", "approve_waves",
             "from_versions", "groups", "continuous", "windows", "allow_downgrade")
SUCCESS_THRESHOLD = 95.0
ENDED = ("succeeded", "failed", "timed_out")  # what thresholds count (not cancelled)
IMPLICIT = {"waves": ["100%"], "allow_downgrade": True}  # a plain task paused or stopped


def parse_amount(value: Any, what: str) -> str:
    """`N` (a count >= 1) or `P%` (0 < P <= 100), as a string."""
    raw = str(value).strip() if isinstance(value, (str, int)) and not isinstance(
        value, bool) else ""
    try:
        if raw.endswith("%"):
            pct = float(raw[:-1])
            if 0 < pct <= 100:
                return f"{pct:g}%"
        elif int(raw) >= 1:
            return str(int(raw))
    except ValueError:
        pass
    raise PlatformError(f"{what}: expected a count (N >= 1) or a percentage (P%),"
                        f" got {value!r:.50}", 422)


def names(value: Any, what: str) -> list[str]:
    """A list of at most 100 names (device ids for `groups`); [] for None or an empty string."""
    if value in (None, ""):
        return []
    if not isinstance(value, list) or len(value) > 100:
        raise PlatformError(f"{what} must be a list (at most 100)", 422)
    return [check_group_name(text(v, what, required=True)) if what == "groups"
            else text(v, what, required=True) for v in value]


def parse_spec(body: dict[str, Any]) -> dict[str, Any] | None:
    """The rollout options of a create-task request; None when none was given."""
    if not any(body.get(k) not in (None, False, [], "") for k in SPEC_KEYS):
        return None
    waves = body.get("waves") or []
    if not isinstance(waves, list) or len(waves) > 50:
        raise PlatformError("waves must be a list of at most 50 sizes (N or P%)", 422)
    on_failure = body.get("on_failure") or "pause"
    if on_failure not in ("pause", "stop"):
        raise PlatformError("on_failure must be pause or stop", 422)
    min_ended = body.get("min_ended") or 0
    if isinstance(min_ended, bool) or not isinstance(min_ended, int) or min_ended < 0:
        raise PlatformError("min_ended must be a whole number >= 0", 422)
    spec = {
        "waves": [w.strip().lower() if isinstance(w, str) and w.strip().lower() == "rest"
                  and i == len(waves) - 1 else parse_amount(w, "wave")
                  for i, w in enumerate(waves)],  # the last wave takes the rest anyway
        "max_failures": (parse_amount(body["max_failures"], "max_failures")
                         if body.get("max_failures") not in (None, "") else None),
        "min_ended": min_ended, "on_failure": on_failure,
        "approve_waves": bool(body.get("approve_waves")),
        "from_versions": names(body.get("from_versions"), "from_versions"),
        "groups": names(body.get("groups"), "groups"),
        "continuous": bool(body.get("continuous")),
        "windows": [w.spec for w in windows.parse_all(body.get("windows"))],
        "allow_downgrade": bool(body.get("allow_downgrade")),
        "success_threshold": SUCCESS_THRESHOLD,
    }
    return spec


def wave_sizes(spec: dict[str, Any], total: int) -> list[int]:
    """How many of `total` devices each wave gets (the last one: the rest)."""
    sizes, left = [], total
    for amount in spec["waves"][:-1] if spec["waves"] else []:
        n = math.ceil(float(amount[:-1]) * total / 100) if amount.endswith("%") else int(amount)
        n = min(n, left)
        sizes.append(n)
        left -= n
    return [*sizes, left]


def exceeded(failed: int, ended: int, limit: str) -> bool:
    """Whether `failed` of `ended` devices reach the failure limit (`N` or `P%`)."""
    if limit.endswith("%"):
        return ended > 0 and failed * 100 >= float(limit[:-1]) * ended
    return failed >= int(limit)


def wave_failure(spec: dict[str, Any], wave: int, counts: dict[str, int]) -> str | None:
    """Why `wave` (its sub-tasks counted by state) fails the task: all its devices ended
    and fewer than the success threshold of the ended ones succeeded. None while it runs,
    when it passed, or when none ended (no device, or all skipped or cancelled)."""
    succeeded = counts.get("succeeded", 0)
    ended = sum(counts.get(s, 0) for s in ENDED)
    threshold = spec["success_threshold"]
    if any(counts.get(s) for s in ("pending", "upgrading")) or not ended or \
            succeeded * 100 >= threshold * ended:
        return None
    rate = math.floor(succeeded * 1000 / ended) / 10  # rounded down: never the threshold
    return (f"wave {wave}: {succeeded} of {ended} device(s) succeeded ({rate:g} %),"
            f" below the success threshold ({threshold:g} %)")


def threshold_failure(spec: dict[str, Any], failed: int, ended: int) -> str | None:
    """Why `failed` of `ended` devices fail the task (`max_failures`, once `min_ended`
    ended); None below the limit or without one."""
    limit = spec["max_failures"]
    if limit and ended >= spec["min_ended"] and failed > 0 and exceeded(failed, ended, limit):
        return (f"failure threshold: {failed} of {ended} ended device(s) failed"
                f" (max {limit}, counted after {spec['min_ended']} ended)")
    return None
