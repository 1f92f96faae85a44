"""Helpers shared by the test files (`from helpers import ...`: pytest puts tests/ on sys.path).

Test files import from here, never from each other.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from nlg.train_log import METRICS_FILE

# ---------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------


def start_ranks(script: Path, argv: list[str], world_size: int = 2) -> list[subprocess.Popen]:
    """`python script *argv` once per rank, started by hand with torchrun's environment but no
    torchrun agent: nothing kills the survivors when a rank dies, so only the process group's
    own timeout can stop them. The caller must reap the processes (see `reap`)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    procs = []
    for rank in range(world_size):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "WORLD_SIZE": str(world_size), "RANK": str(rank), "LOCAL_RANK": str(rank),
               "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
        procs.append(subprocess.Popen([sys.executable, str(script), *argv], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


def reap(procs: list[subprocess.Popen]) -> None:
    """Kill whichever of `procs` still runs and collect every one's output."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


# ---------------------------------------------------------------------------------------------
# Training runs
# ---------------------------------------------------------------------------------------------


def metrics(work_dir: Path) -> list[dict]:
    """The records of a run's metrics.jsonl."""
    return [json.loads(line) for line in (work_dir / METRICS_FILE).read_text().splitlines()]


def without_timing(records: list[dict]) -> list[dict]:
    """The records without tokens_per_s, which no two runs share."""
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in records]


def assert_same_log(a: list[dict], b: list[dict], rel: float) -> None:
    """Two metrics logs hold the same records, numbers equal to `rel`, timing aside."""
    a, b = without_timing(a), without_timing(b)
    assert [sorted(r) for r in a] == [sorted(r) for r in b]
    for x, y in zip(a, b, strict=True):
        assert x == pytest.approx(y, rel=rel), (x, y)
