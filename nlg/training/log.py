"""The training log, WORK_DIR/metrics.jsonl: written by `nlg train`, read by `nlg plot`.

One JSON object per line, each flushed as it is written (a crash loses nothing written):

    {"step", "epoch", "loss", "lr", "tokens_per_s", "tokens"}     every --log_interval steps
        loss: the training loss (label-smoothed, per completion token) since the previous
        record; lr: that of the last update; tokens_per_s: real input tokens per second
    {"step", "epoch", "valid_loss", "valid_ppl"}                  every --eval_interval steps
        and at each epoch end: the plain NLL per completion token and its exp

`epoch` counts from 1. A resumed run cuts the log back to its checkpoint's step, and the
checkpoint's `LossWindow` makes its next record the one the interrupted run would have written.
No torch here: `nlg plot` reads the log without it.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from nlg.files import InputError, parse_json, read_lines, write_jsonl

METRICS_FILE = "metrics.jsonl"


@dataclass
class LossWindow:
    """Sums over the training steps since the last loss record.

    A checkpoint stores exactly these fields (`dataclasses.asdict`) and a resumed run restores
    them (`LossWindow(**saved)`), so a window half full at the checkpoint still gives the record
    the uninterrupted run writes.
    """

    loss_sum: float = 0.0  # the training loss summed over completion tokens, all ranks
    n_loss: int = 0  # completion tokens in that sum
    n_tokens: int = 0  # real input tokens, all ranks
    seconds: float = 0.0  # wall time of those steps

    def add(self, loss_sum: float, n_loss: int, n_tokens: int, seconds: float) -> None:
        self.loss_sum += loss_sum
        self.n_loss += n_loss
        self.n_tokens += n_tokens
        self.seconds += seconds

    def record(self, step: int, epoch: int, lr: float) -> dict:
        """The training-loss record of this window."""
        return {"step": step, "epoch": epoch, "loss": self.loss_sum / max(self.n_loss, 1), "lr": lr,
                "tokens_per_s": self.n_tokens / max(self.seconds, 1e-9), "tokens": self.n_tokens}


class MetricsLog:
    """Rank 0's JSON-lines log; every record is flushed at once (a crash loses nothing written)."""

    def __init__(self, path: Path, enabled: bool, resume_step: int | None):
        self.path = path
        self.enabled = enabled
        if enabled:
            write_jsonl(path, [] if resume_step is None else self._records_up_to(resume_step))

    def _records_up_to(self, step: int) -> list[dict]:
        """Records of the interrupted run up to `step`; later ones will be written again."""
        if not self.path.is_file():
            return []
        kept = []
        for line in read_lines(self.path):
            try:
                record = parse_json(line, self.path)
            except InputError:
                continue  # a line cut short by the kill
            if isinstance(record, dict) and record.get("step", math.inf) <= step:
                kept.append(record)
        return kept

    def write(self, record: dict) -> None:
        """Append one record; a failed write (a full disk) takes back what it appended and
        raises an OSError naming the log."""
        if not self.enabled:
            return
        data = memoryview((json.dumps(record) + "\n").encode("utf-8"))
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            end = os.lseek(fd, 0, os.SEEK_END)
            try:
                while data:
                    data = data[os.write(fd, data):]
            except OSError as error:
                os.ftruncate(fd, end)
                raise OSError(error.errno, error.strerror, str(self.path)) from error
        finally:
            os.close(fd)
