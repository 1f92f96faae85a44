"""nlg.training.log: the loss record of a window, and a resumed run's log cut back to its step."""

from __future__ import annotations

import json

from nlg.training.log import LossWindow, MetricsLog


def test_loss_window_record_is_the_token_mean():
    window = LossWindow()
    window.add(loss_sum=6.0, n_loss=4, n_tokens=10, seconds=0.5)
    window.add(loss_sum=3.0, n_loss=2, n_tokens=6, seconds=0.5)
    assert window.record(step=4, epoch=1, lr=0.1) == {"step": 4, "epoch": 1, "loss": 1.5, "lr": 0.1,
                                                      "tokens_per_s": 16.0, "tokens": 16}


def test_resumed_log_keeps_records_up_to_the_checkpoint(tmp_path):
    path = tmp_path / "metrics.jsonl"
    records = [{"step": step, "loss": 1.0} for step in (2, 4, 6)]
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"step": 8, "lo')  # cut by a kill
    log = MetricsLog(path, enabled=True, resume_step=4)
    log.write({"step": 5, "loss": 2.0})
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [2, 4, 5]
    MetricsLog(path, enabled=True, resume_step=None)  # a fresh run starts an empty log
    assert path.read_text() == ""
