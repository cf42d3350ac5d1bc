from __future__ import annotations

from pathlib import Path

import pytest
from fota_host.platform.process import start_platform


@pytest.fixture
def platform(tmp_path: Path):
    """A platform serving `tmp_path / "plat"`, the `--data` folder the commands name."""
    proc = start_platform(tmp_path / "plat", device_timeout=120)
    yield proc
    proc.stop()
