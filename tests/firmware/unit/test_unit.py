"""Fast unit tests of the device's pure functions, on the real MicroPython unix port.

The cases are MicroPython modules beside this file (cases_*.py, no broker, no
subprocess per case): runner.py runs them all in one micropython process, against the
device build (.mpy, as deployed), and prints one JSON line per case; each becomes a
pytest case here. `make test-fast` runs just these (seconds).
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from fota_host.sim import mprun

HERE = Path(__file__).parent
MODULES = sorted(p.stem for p in HERE.glob("cases_*.py"))


def case_names() -> list[str]:
    """Every test_* function of the case modules, read without running them."""
    names = []
    for module in MODULES:
        tree = ast.parse((HERE / f"{module}.py").read_text())
        names += [f"{module}.{node.name}" for node in tree.body
                  if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")]
    return names


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    work = tmp_path_factory.mktemp("unit")
    proc = mprun.run([str(HERE / "runner.py"), str(work), *MODULES], extra_path=[HERE],
                     timeout=120)
    out: dict[str, dict] = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            case = json.loads(line)
            out[case["case"]] = case
    if not out:
        pytest.fail(f"the runner reported nothing (exit {proc.returncode}):\n{proc.stderr}")
    out["<exit>"] = {"returncode": proc.returncode, "stderr": proc.stderr}
    return out


def test_every_case_ran(results: dict[str, dict]) -> None:
    """No case module failed to import and no case went unreported."""
    ran = set(results) - {"<exit>"}
    assert ran == set(case_names()), results["<exit>"]["stderr"]


@pytest.mark.parametrize("case", case_names())
def test_device_case(results: dict[str, dict], case: str) -> None:
    got = results.get(case)
    assert got is not None, f"{case} did not run:\n{results['<exit>']['stderr']}"
    assert got["ok"], got.get("error")
