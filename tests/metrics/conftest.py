"""Fixtures of the metric tests: the E2E test set as bench/score_speed.py builds it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# bench/score_speed.py (a script: bench/ is not a package) reads the E2E test set and makes the
# template outputs it times; the tests pin the scores of those very outputs
_spec = importlib.util.spec_from_file_location("score_speed", REPO / "bench" / "score_speed.py")
score_speed = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(score_speed)


@pytest.fixture(scope="session")
def e2e_test(e2e_raw_dir) -> tuple[list[list[str]], list[str], list[str]]:
    """References per distinct MR of the test split (first-occurrence order), template outputs,
    and each instance's first reference as a second system."""
    groups = score_speed.e2e_groups(e2e_raw_dir / "test.txt")
    refs = list(groups.values())
    return refs, [score_speed.template_output(mr) for mr in groups], [group[0] for group in refs]


@pytest.fixture
def write():
    """write(path, text) -> path, in UTF-8."""

    def write_text(path: Path, text: str) -> Path:
        path.write_text(text, encoding="utf-8")
        return path

    return write_text
