"""Shared test fixtures: where the read-only shared data lives.

`NLG_SHARED_DIR` points at the `shared/` folder that sits beside the checkout
(default `../shared`); its files are read in place, never copied.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NLG_SHARED_DIR", REPO.parent / "shared")).resolve()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared data not found at {SHARED} (set NLG_SHARED_DIR)")
    return SHARED


@pytest.fixture(scope="session")
def vocab_dir(shared_dir: Path) -> Path:
    return shared_dir / "vocab" / "gpt2"


@pytest.fixture(scope="session")
def e2e_raw_dir(shared_dir: Path) -> Path:
    return shared_dir / "data" / "e2e"
