"""Processes and devices: the one set-up shared by the stages torchrun may launch (train, beam).

    torchrun --nproc_per_node=N -m nlg.train ...      (or -m nlg.beam ...)

torchrun sets WORLD_SIZE, RANK and LOCAL_RANK. With WORLD_SIZE > 1, `init_runtime` joins the
process group (NCCL on GPUs, gloo on CPUs) with a timeout: a collective that waits longer than
that for a dead or stuck rank raises instead of hanging forever, so the surviving ranks exit.
The timeout is `--dist_timeout` seconds, by default $NLG_DIST_TIMEOUT or 600. A single process
(no torchrun, or WORLD_SIZE=1) never touches torch.distributed, and every helper below is then
the identity.

While a rank waits in `init_runtime` for the others to join, SIGTERM takes its default action
(the process ends at once): the wait is in C++, where no Python handler (nlg train's
`stop_signals`) can run, and nothing is there to unwind yet. So when one rank refuses to start
before joining (a --work_dir in use, say), torchrun's agent stops the waiting ranks at once,
where they would otherwise sit out its 30 s grace period before it kills them.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from nlg.files import InputError

TIMEOUT_ENV = "NLG_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 600.0


def default_timeout() -> float:
    """Seconds a collective may wait: $NLG_DIST_TIMEOUT, else 600."""
    return float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))


@dataclass(frozen=True)
class Runtime:
    """This process's place in the run: its rank, how many processes, and its device."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def default_nproc() -> int:
    """Processes a run on this machine gets by default: one per visible GPU, else one."""
    return max(torch.cuda.device_count(), 1)


def pick_device(name: str, local_rank: int, world_size: int) -> torch.device:
    """`auto` (cuda if available, else cpu), `cpu`, `cuda` or `cuda:N`. Under torchrun a bare
    `cuda` means the GPU of this process's LOCAL_RANK."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {name}: CUDA is not available on this machine")
    device = torch.device(name)
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", local_rank if world_size > 1 else torch.cuda.current_device())
        torch.cuda.set_device(device)
    return device


def init_runtime(device: str = "auto", timeout: float | None = None) -> Runtime:
    """Pick the device and, when launched with WORLD_SIZE > 1, join the process group.

    timeout: seconds any collective may wait (default `default_timeout()`).
    """
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    rank = int(os.environ.get("RANK", 0))
    chosen = pick_device(device, int(os.environ.get("LOCAL_RANK", 0)), world_size)
    if world_size > 1:
        seconds = default_timeout() if timeout is None else timeout
        with sigterm_ends_process():
            dist.init_process_group(backend="nccl" if chosen.type == "cuda" else "gloo",
                                    timeout=datetime.timedelta(seconds=seconds),
                                    device_id=chosen if chosen.type == "cuda" else None)
        rank, world_size = dist.get_rank(), dist.get_world_size()
    return Runtime(rank=rank, world_size=world_size, device=chosen)


@contextlib.contextmanager
def sigterm_ends_process() -> Iterator[None]:
    """While the block runs, SIGTERM has its default action (see the module's note); then the
    handler before it again. Only the main thread can set handlers: elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def close_runtime(rt: Runtime) -> None:
    """Leave the process group (if `rt` joined one)."""
    if rt.distributed:
        dist.destroy_process_group()


def all_reduce_sum(values: list[float], rt: Runtime) -> list[float]:
    """Sum a few numbers over all ranks (one collective, in float64)."""
    if not rt.distributed:
        return [float(v) for v in values]
    tensor = torch.tensor(values, dtype=torch.float64, device=rt.device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def all_gather_objects(value: Any, rt: Runtime) -> list[Any]:
    """Every rank's `value` (picklable), by rank, on every rank."""
    if not rt.distributed:
        return [value]
    gathered: list[Any] = [None] * rt.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def barrier(rt: Runtime) -> None:
    """Wait until every rank gets here."""
    if rt.distributed:
        dist.barrier()
