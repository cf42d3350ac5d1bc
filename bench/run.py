"""`make bench`: run every bench/bench_*.py module's run() and print one JSON object last.

Each module returns a dict of figures; progress goes to stderr, the JSON to stdout.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
import traceback
from pathlib import Path


def main() -> int:
    figures: dict[str, object] = {}
    only = sys.argv[1:]
    for path in sorted(Path(__file__).parent.glob("bench_*.py")):
        if only and path.stem not in only:
            continue
        spec = importlib.util.spec_from_file_location(path.stem, path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        started = time.monotonic()
        print(f"bench: {path.stem} ...", file=sys.stderr, flush=True)
        try:
            spec.loader.exec_module(module)
            figures.update(module.run())
        except Exception:  # a failing bench is reported, the others still run
            traceback.print_exc()
            figures[f"{path.stem}_error"] = True
        print(f"bench: {path.stem} done in {time.monotonic() - started:.1f}s", file=sys.stderr)
    print(json.dumps(figures, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
