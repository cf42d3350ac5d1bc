"""Prepare the device side: fetch the pinned MicroPython libraries and compile to .mpy.

The libraries (umqtt.simple, urequests) are published on the package index only as
old sdists that pip cannot install, so they are fetched by package name from the
index pip is configured with, checked against the pinned sha256 and unpacked.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import urllib.request
from pathlib import Path

from .. import paths

LIBS_MANIFEST = "device-libs.json"
# Default optimisation: -O1+ would strip the asserts umqtt uses for protocol checks.
MPY_FLAGS: list[str] = []


class BuildError(RuntimeError):
    pass


def index_url() -> str:
    """The simple index pip uses here (PIP_INDEX_URL, pip's config, or pip's default)."""
    env = os.environ.get("PIP_INDEX_URL")
    if env:
        return env.rstrip("/")
    try:
        out = subprocess.run(
            [sys.executable, "-m", "pip", "config", "get", "global.index-url"],
            capture_output=True, text=True, timeout=60,
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip().rstrip("/")
    except (OSError, subprocess.SubprocessError):
        pass
    from pip._internal.models.index import PyPI  # pip's own default index

    return PyPI.simple_url.rstrip("/")


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _sdist_url(name: str, version: str) -> str:
    page = f"{index_url()}/{_normalise(name)}/"
    req = urllib.request.Request(
        page, headers={"Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1"}
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        body = resp.read().decode()
        ctype = resp.headers.get("Content-Type", "")
    wanted = re.compile(rf"^{re.escape(name)}-{re.escape(version)}\.tar\.gz$", re.I)
    if "json" in ctype:
        for entry in json.loads(body)["files"]:
            if wanted.match(entry["filename"]):
                return urllib.request.urljoin(page, entry["url"])
    else:
        for href, filename in re.findall(r'href="([^"]+)"[^>]*>([^<]+)<', body):
            if wanted.match(filename.strip()):
                return urllib.request.urljoin(page, href)
    raise BuildError(f"{name} {version}: no sdist on the package index ({page})")


def fetch_libs(force: bool = False) -> list[Path]:
    """Download, verify and unpack the device libraries into build/deps."""
    manifest = json.loads((paths.firmware_dir() / LIBS_MANIFEST).read_text())
    cache = paths.build_dir() / "downloads"
    cache.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for pkg in manifest["packages"]:
        tarball = cache / f"{pkg['name']}-{pkg['version']}.tar.gz"
        if force or not tarball.exists() or _sha256(tarball.read_bytes()) != pkg["sha256"]:
            with urllib.request.urlopen(_sdist_url(pkg["name"], pkg["version"]), timeout=120) as r:
                data = r.read()
            digest = _sha256(data)
            if digest != pkg["sha256"]:
                raise BuildError(
                    f"{pkg['name']} {pkg['version']}: sha256 {digest} does not match the pin "
                    f"{pkg['sha256']} in firmware/{LIBS_MANIFEST}"
                )
            tarball.write_bytes(data)
        with tarfile.open(fileobj=io.BytesIO(tarball.read_bytes())) as tar:
            for member, dest in pkg["members"].items():
                src = tar.extractfile(f"{pkg['name']}-{pkg['version']}/{member}")
                if src is None:
                    raise BuildError(f"{pkg['name']}: {member} missing from the sdist")
                target = paths.deps_dir() / dest
                target.parent.mkdir(parents=True, exist_ok=True)
                data = src.read()
                if not target.exists() or target.read_bytes() != data:
                    target.write_bytes(data)    # untouched otherwise: no needless recompile
                written.append(target)
    return written


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def compile_tree(src_root: Path, dst_root: Path, skip: tuple[str, ...] = ()) -> int:
    """mpy-cross every .py under src_root into dst_root (only those that changed)."""
    count = 0
    for src in sorted(src_root.rglob("*.py")):
        rel = src.relative_to(src_root)
        if rel.parts and rel.parts[0] in skip:
            continue
        dst = dst_root / rel.with_suffix(".mpy")
        if dst.exists() and dst.stat().st_mtime >= src.stat().st_mtime:
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            [paths.mpy_cross_bin(), *MPY_FLAGS, "-o", str(dst), "-s", str(rel), str(src)],
            capture_output=True, text=True,
        )
        if proc.returncode != 0:
            raise BuildError(f"mpy-cross failed on {src}:\n{proc.stderr}")
        count += 1
    return count


def build_device(fetch: bool = True) -> dict[str, int]:
    """The whole device build: libraries, the fota package, the unix-port stand-ins."""
    if fetch or not (paths.deps_dir() / "umqtt" / "simple.py").exists():
        fetch_libs()
    fw = paths.firmware_dir()
    return {
        "libs": compile_tree(paths.deps_dir(), paths.device_dir()),
        "fota": compile_tree(fw / "fota", paths.device_dir() / "fota"),
        "sim": compile_tree(fw / "sim", paths.sim_dir()),
    }


def ensure_built() -> None:
    """Recompile what changed; fetch the libraries only if they are not there yet."""
    build_device(fetch=False)


def clean() -> None:
    for d in (paths.device_dir(), paths.sim_dir()):
        shutil.rmtree(d, ignore_errors=True)
