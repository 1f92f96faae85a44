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


def test_train_problems_are_parse_args_checks_without_exiting(capsys):
    from nlg.training.settings import train_problems

    assert train_problems(["--train_data", "x"]) == []
    assert train_problems(["--train_data", "x", "--lr", "0"]) == ["--lr 0: must be > 0 (a run at learning rate 0 cannot learn)"]
    assert train_problems(["--train_data", "x", "--lora_dim", "0", "--platform", "local"]) == ["--lora_dim must be >= 1"]
    assert train_problems(["--train_data", "x", "--method", "adapter-l", "--adapter_dim", "0"]) == ["--adapter_dim must be >= 1"]
    assert "conflicts with --method top2" in train_problems(["--train_data", "x", "--full_finetune", "--method", "top2"])[0]
    assert "invalid int value" in train_problems(["--train_data", "x", "--lora_dim", "x"])[0]
    assert train_problems([]) and train_problems(["--train_data", "x", "--bogus"])
    assert capsys.readouterr().err == ""  # no warning, no usage


def test_lora_checks_are_loras_and_the_config_holds_its_settings_object():
    from nlg import methods

    config = parse_args(["--train_data", "x", "--lora_dim", "8", "--lora_dropout", "0.2"])
    assert config.method_settings == LoRASettings(rank=8, dropout=0.2)
    assert config.to_json()["lora_dim"] == 8 and config.to_json()["lora_targets"] == ["q", "v"]
    assert "adapter_dim" not in config.to_json()
    assert methods.get("lora").check({"lora_dropout": 1.0}) == ["--lora_dropout must be in [0, 1)"]
    adapter = parse_args(["--train_data", "x", "--method", "adapter-h"])
    assert adapter.to_json()["adapter_dim"] == 112 and "lora_dim" not in adapter.to_json()
    assert TrainConfig(train_data="x").method_settings == LoRASettings()
    for name in ("lora_dim", "adapter_dim", "top_layers", "prefix_len", "prefix_hidden", "method"):
        assert name in __import__("nlg.training.settings", fromlist=["RESUME_FIXED"]).RESUME_FIXED
