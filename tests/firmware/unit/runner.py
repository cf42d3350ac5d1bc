# A small test runner for the MicroPython unix port: one process runs every case.
# Usage: micropython runner.py WORKDIR MODULE...   (MODULE: cases_*.py beside this file)
# Each test_* function of each module runs in WORKDIR (a scratch folder for files);
# one JSON line per case: {"case": "module.function", "ok": bool, "error": "..."}.
import json
import os
import sys


def _error(exc):
    # The exception's type and text, without the traceback (a device has no use for it).
    return f"{type(exc).__name__}: {exc}"


def main(workdir, modules):
    os.chdir(workdir)
    failed = 0
    for name in modules:
        module = __import__(name)
        for attr in sorted(dir(module)):
            func = getattr(module, attr)
            if not attr.startswith("test_") or not callable(func):
                continue
            case = {"case": name + "." + attr, "ok": True}
            try:
                func()
            except Exception as exc:  # noqa: BLE001 - a failing case is reported, not raised
                case["ok"] = False
                case["error"] = _error(exc)
                failed += 1
            print(json.dumps(case))
    return failed


sys.exit(1 if main(sys.argv[1], sys.argv[2:]) else 0)
