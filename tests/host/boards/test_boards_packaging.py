"""mip's package.json and the freezing manifest.py list files that exist."""

from __future__ import annotations

import json
from pathlib import Path

from fota_host import paths


def test_package_json_lists_every_device_module_and_only_existing_files() -> None:
    fw = paths.firmware_dir()
    pkg = json.loads((fw / "package.json").read_text())
    listed = {target for target, _ in pkg["urls"]}
    for target, source in pkg["urls"]:
        assert (fw / source).is_file(), source
        assert target == source and target.startswith("fota/")
    modules = {f"fota/{p.name}" for p in (fw / "fota").glob("*.py")}
    assert listed == modules
    assert ["umqtt.simple", "latest"] in pkg["deps"]      # Pico W firmware has no umqtt
    assert pkg["version"]


class _Options:
    def __init__(self, **given: object) -> None:
        self.__dict__.update(given)

    def defaults(self, **kw: object) -> None:
        for k, v in kw.items():
            self.__dict__.setdefault(k, v)


def _run_manifest(**options: object) -> dict[str, list]:
    """Execute manifest.py with recording stand-ins for MicroPython's manifest functions."""
    calls: dict[str, list] = {"package": [], "require": [], "module": [], "include": []}
    manifest = paths.firmware_dir() / "manifest.py"
    env = {
        "options": _Options(**options),
        "metadata": lambda **kw: None,
        "package": lambda name, *a, **kw: calls["package"].append((name, kw)),
        "require": lambda name, **kw: calls["require"].append(name),
        "module": lambda name, *a, **kw: calls["module"].append(name),
        "include": lambda path, **kw: calls["include"].append(path),
    }
    exec(compile(manifest.read_text(), str(manifest), "exec"), env)
    return calls


def test_manifest_freezes_the_existing_package() -> None:
    calls = _run_manifest()
    base = paths.firmware_dir()
    assert [name for name, _ in calls["package"]] == ["fota"]
    for name, kw in calls["package"]:
        folder = Path(kw.get("base_path", base)) / name
        assert (folder / "__init__.py").is_file()
        assert (folder / "engine.py").is_file() and (folder / "agent.py").is_file()
    assert calls["require"] == []                 # ESP32: umqtt.simple is frozen already


def test_manifest_adds_umqtt_for_pico_w() -> None:
    assert _run_manifest(umqtt=True)["require"] == ["umqtt.simple"]
