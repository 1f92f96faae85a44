"""nlg.training.checkpoints: which directories count as checkpoints, and training_state.pt's round trip.

Writing, resuming and refusing mismatched settings through a whole run: tests/training/test_trainer.py.
"""

from __future__ import annotations

import torch

from nlg.training.checkpoints import (
    STATE_FILE,
    TrainingState,
    checkpoint_dir,
    latest_checkpoint,
    list_checkpoints,
    load_training_state,
)
from nlg.training.log import LossWindow


def test_only_complete_checkpoints_count_in_step_order(tmp_path):
    assert list_checkpoints(tmp_path / "missing") == [] and latest_checkpoint(tmp_path) is None
    for step in (9, 10, 100):
        checkpoint_dir(tmp_path, step).mkdir()
        (checkpoint_dir(tmp_path, step) / STATE_FILE).touch()
    checkpoint_dir(tmp_path, 200).mkdir()  # no training state: not a checkpoint
    (tmp_path / ".checkpoint-300.tmp").mkdir()  # atomic_dir's unfinished one
    (tmp_path / "checkpoint-x").mkdir()
    assert list_checkpoints(tmp_path) == [(step, tmp_path / f"checkpoint-{step}") for step in (9, 10, 100)]
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-100"


def test_training_state_round_trips_through_a_weights_only_load(tmp_path):
    window = LossWindow(loss_sum=12.5, n_loss=7, n_tokens=40, seconds=0.25)
    state = TrainingState(step=3, epoch=1, batch_in_epoch=2, optimizer={"state": {}, "param_groups": []},
                          scheduler={"last_epoch": 3}, rng=[{"torch": torch.get_rng_state()}],
                          log_window=window, config={"seq_len": 96}, world_size=1, n_train=36)
    checkpoint = checkpoint_dir(tmp_path, 3)
    checkpoint.mkdir()
    torch.save(state.to_file(), checkpoint / STATE_FILE)
    loaded = load_training_state(checkpoint)
    assert loaded.log_window == window
    assert (loaded.step, loaded.epoch, loaded.batch_in_epoch, loaded.n_train) == (3, 1, 2, 36)
    assert torch.equal(loaded.rng[0]["torch"], state.rng[0]["torch"])
