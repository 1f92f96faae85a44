"""nlg.training.settings: both flag spellings, the paper's published command, and refused values."""

from __future__ import annotations

import pytest

from nlg.methods.lora import LoRASettings
from nlg.training.settings import TrainConfig, parse_args

PAPER_COMMAND = """--train_data ./data/e2e/train.jsonl --valid_data ./data/e2e/valid.jsonl
    --train_batch_size 8 --grad_acc 1 --valid_batch_size 4 --seq_len 512 --model_card gpt2.md
    --init_checkpoint ./pretrained_checkpoints/gpt2-medium-pytorch_model.bin --platform local
    --clip 0.0 --lr 0.0002 --weight_decay 0.01 --correct_bias --adam_beta2 0.999
    --scheduler linear --warmup_step 500 --max_epoch 5 --save_interval 1000 --lora_dim 4
    --lora_alpha 32 --lora_dropout 0.1 --label_smooth 0.1 --work_dir ./trained_models/GPT2_M/e2e
    --random_seed 110 --local_rank=0""".split()


def test_cli_accepts_both_spellings_and_the_papers_command(capsys):
    underscored = parse_args(PAPER_COMMAND)
    dashed = parse_args([a.replace("_", "-") if a.startswith("--") else a for a in PAPER_COMMAND])
    assert underscored == dashed
    assert "--platform is ignored" in capsys.readouterr().err
    assert underscored == TrainConfig(
        train_data="./data/e2e/train.jsonl", valid_data="./data/e2e/valid.jsonl", model_card="gpt2.md",
        init_checkpoint="./pretrained_checkpoints/gpt2-medium-pytorch_model.bin", max_epoch=5,
        work_dir="./trained_models/GPT2_M/e2e", dist_timeout=underscored.dist_timeout)
    assert parse_args(["--train-data", "x", "--adam-epislon", "1e-8", "--lora-targets", "q,k,v"]) == \
        TrainConfig(train_data="x", adam_epsilon=1e-8, method_settings=LoRASettings(targets=("q", "k", "v")),
                    dist_timeout=underscored.dist_timeout)
    with pytest.raises(SystemExit):
        parse_args(["--train_data", "x", "--lora_targets", "q,zz"])
    with pytest.raises(SystemExit):
        parse_args(["--train_data", "x", "--scheduler", "cycle"])
