"""Shared test fixtures.

``shared_data``: the folder of real patient data, ``../shared/data`` next to the repository
(never copied into it). Tests that use it are skipped, with the reason, when it is absent.
"""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ../shared/data; skips the test when that folder does not exist."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"../shared/data not found: {SHARED_DATA} (real-data tests need it)")
    return SHARED_DATA
