"""`nlg train --method NAME`, `nlg beam --checkpoint` and `--resume` for every method, run as a
user runs them, on a tiny random base and a copy task: the loss falls, exactly the method's
parameters change (every frozen one stays bit-identical), the count is printed and recorded,
kill-and-resume is exact, and bad input (item 7 of issue 20) is one line, exit 2, nothing
written."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from helpers import (
    METHOD_SETTINGS,
    cli_result,
    killed_run,
    method_flags,
    metrics,
    tiny_config,
    trainable_base,
    write_copy_task,
)
from safetensors.torch import load_file

from nlg import methods
from nlg.cli import main as nlg
from nlg.training.distributed import Runtime
from nlg.training.settings import parse_args
from nlg.training.trainer import Trainer, load_data
from nlg.weights import from_pretrained

ALL = list(METHOD_SETTINGS)
CONFIG = tiny_config(vocab_size=128, n_positions=32)
LR = {"lora": "5e-2", "full": "3e-3", "prefix": "3e-2", "prefix-embed": "3e-1", "vera": "3e-1", "vblora": "1e-1",
      "adalora": "3e-1"}  # what moves the loss of each within a few steps
SEQ_LEN = {"prefix": "24", "prefix-embed": "24"}  # room for the prefix in the base's 32 positions


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("method-runs")
    return {"base": trainable_base(root / "base", CONFIG, seed=0, scale=5),
            "train": write_copy_task(root / "train.jsonl", 24, seed=1, vocab=128, lengths=(4, 6)),
            "test": write_copy_task(root / "test.jsonl", 3, seed=2, vocab=128, lengths=(4, 6)),
            "big_base": trainable_base(root / "big_base", replace(CONFIG, vocab_size=50257), seed=0, scale=5)}


def train_args(files: dict, work: Path, name: str, *extra, with_method: bool = True) -> list[str]:
    """A few-step run of method `name` (its flags left out with with_method=False)."""
    flags = method_flags(name) if with_method else []
    return ["--train_data", str(files["train"]), "--init_checkpoint", str(files["base"]),
            "--work_dir", str(work), "--train_batch_size", "8", "--seq_len", SEQ_LEN.get(name, "32"), "--warmup_step", "0",
            "--lr", LR.get(name, "1e-2"), "--label_smooth", "0", "--log_interval", "1", "--save_interval", "3",
            "--eval_interval", "1000", "--device", "cpu", *flags, *map(str, extra)]


# A prompt before the context cannot teach a random tiny model to copy: prefix-embed's loss falls
# on a task it can learn, in tests/methods/test_prefix.py.
@pytest.mark.parametrize("name", [n for n in ALL if n != "prefix-embed"])
def test_training_moves_exactly_the_methods_parameters(files, tmp_path, capsys, name: str) -> None:
    work = tmp_path / "run"
    config = parse_args(train_args(files, work, name, "--max_step", 9))
    trainer = Trainer(config, Runtime(device=torch.device("cpu")), load_data(config))
    final = trainer.run()
    losses = [r["loss"] for r in metrics(work) if "loss" in r]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.5, losses

    method = methods.get(name)
    trained_names = set(method.trainable(trainer.model))
    base = dict(from_pretrained(files["base"]).named_parameters())
    for key, param in trainer.model.named_parameters():
        if key in trained_names:
            assert key not in base or not torch.equal(param, base[key]), f"{key} did not train"
        else:
            assert torch.equal(param, base[key]), f"frozen {key} changed"

    count = methods.get(name).count(methods.Shape.of(CONFIG), methods.settings_of(name, config.to_json()))
    assert f"{count:,} trainable" in capsys.readouterr().out
    recorded = json.loads((work / "train_config.json").read_text())
    assert (recorded["method"], recorded["trainable_params"]) == (name, count)
    record = methods.read_record(final)
    assert (record.method, record.trainable_params, record.model["n_embd"]) == (name, count, 64)


def weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    out = {}
    for path in sorted(checkpoint.glob("*.safetensors")):
        out.update({f"{path.name}:{k}": v for k, v in load_file(path).items()})
    return out


@pytest.mark.parametrize("name", ALL)
def test_killed_and_resumed_run_equals_uninterrupted(files, tmp_path, monkeypatch, name: str) -> None:
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    assert nlg(["train", *train_args(files, whole, name, "--max_step", 6)]) == 0
    killed_run(train_args(files, broken, name, "--max_step", 6), 5, monkeypatch)  # after checkpoint-3
    assert sorted(p.name for p in broken.glob("checkpoint-*")) == ["checkpoint-3"]
    # Resumed without repeating the method or its settings: the checkpoint's are taken.
    assert nlg(["train", *train_args(files, broken, name, "--max_step", 6, "--resume", "latest",
                                     with_method=False)]) == 0
    assert json.loads((broken / "train_config.json").read_text())["method"] == name
    expected, got = weights(whole / "checkpoint-6"), weights(broken / "checkpoint-6")
    assert expected.keys() == got.keys() and expected
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ALL)
def test_beam_reads_the_method_from_the_checkpoint(files, tmp_path, name: str) -> None:
    """`nlg beam --checkpoint` decodes what the method trained, as its in-process model does; a
    full checkpoint needs no base. (The whole vocabulary: 50256 always ends a sequence.)"""
    from nlg.beam import BeamConfig, beam_search, load_model

    work, out = tmp_path / "run", tmp_path / "predict.jsonl"
    argv = train_args(files, work, name, "--max_step", 2, "--save_interval", 2)
    argv[argv.index("--init_checkpoint") + 1] = str(files["big_base"])
    assert nlg(["train", *argv]) == 0
    base = [] if name == "full" else ["--init_checkpoint", str(files["big_base"])]
    assert nlg(["beam", "--data", str(files["test"]), *base, "--checkpoint", str(work / "checkpoint-2"),
                "--beam", "2", "--eval_len", "4", "--no_progress", "--output_file", str(out)]) == 0
    got = [json.loads(line)["predict"] for line in out.read_text().splitlines()]
    model = load_model(str(files["big_base"]), None, str(work / "checkpoint-2"))
    contexts = [json.loads(line)["context"] for line in files["test"].read_text().splitlines()]
    cfg = BeamConfig(beam=2, eval_len=4, length_penalty=0.8, no_repeat_ngram_size=4, eos_ids=(50256, 628))
    assert got == beam_search(model, contexts, cfg)


def test_bad_method_input_is_one_line_exit_2_nothing_written(files, tmp_path, capsys) -> None:
    work = tmp_path / "never"
    code, err = cli_result(["train", *train_args(files, work, "full"), "--method", "prefix-x"], capsys)
    assert code == 2 and err.count("\n") == 0 and "--method prefix-x: unknown method; choose one of lora" in err
    code, err = cli_result(["train", *train_args(files, work, "lora"), "--adapter_dim", "4"], capsys)
    assert code == 2 and "--adapter_dim is a setting of --method adapter-l, not of --method lora" in err
    code, err = cli_result(["train", *train_args(files, work, "adapter-h"), "--top_layers", "1"], capsys)
    assert code == 2 and "--top_layers is a setting of --method top2, not of --method adapter-h" in err
    assert not work.exists()
    code, err = cli_result(["train", *train_args(files, work, "full"), "--method", "top2", "--top_layers", "3"], capsys)
    assert code == 2 and err.count("\n") == 0 and "--top_layers 3: the model has 2 blocks" in err
    assert not list(work.glob("checkpoint-*")) and not (work / "train_config.json").exists()

    # Resuming a LoRA run as adapter-h: both methods named, the checkpoint untouched.
    lora = tmp_path / "lora"
    assert nlg(["train", *train_args(files, lora, "lora", "--max_step", 3)]) == 0
    before = sorted(p.name for p in lora.iterdir())
    code, err = cli_result(["train", *train_args(files, lora, "adapter-h", "--max_step", 6, "--resume", "latest")], capsys)
    assert code == 2 and err.count("\n") == 0
    assert "method: checkpoint 'lora', now 'adapter-h'" in err
    assert sorted(p.name for p in lora.iterdir()) == before

    # Decoding it on a model of another size: both shapes named, no output.
    out = tmp_path / "x.jsonl"
    code, err = cli_result(["beam", "--data", str(files["test"]), "--model_card", "gpt2.tiny", "--checkpoint",
                     str(lora / "checkpoint-3"), "--output_file", str(out)], capsys)
    assert code == 2 and err.count("\n") == 0
    assert "n_embd 64" in err and "n_embd 128" in err and not out.exists()


def test_lora_only_commands_refuse_other_methods_by_name(files, tmp_path, capsys) -> None:
    work = tmp_path / "adapter"
    assert nlg(["train", *train_args(files, work, "adapter-l", "--max_step", 1)]) == 0
    checkpoint = work / "checkpoint-1"
    out = tmp_path / "x.jsonl"
    code, err = cli_result(["beam", "--data", str(files["test"]), "--init_checkpoint", str(files["base"]),
                     "--lora_checkpoint", str(checkpoint), "--output_file", str(out)], capsys)
    assert code == 2 and "holds a checkpoint of method adapter-l, not LoRA; give it as --checkpoint" in err
    code, err = cli_result(["analyze", str(checkpoint)], capsys)
    assert code == 2 and err.count("\n") == 0 and "a checkpoint of method adapter-l; nlg analyze reads LoRA adapters only" in err
    assert not out.exists()


def test_a_checkpoint_of_no_known_kind_and_a_foreign_adapterhub_design_are_named(files, tmp_path, capsys) -> None:
    empty, out = tmp_path / "empty", tmp_path / "x.jsonl"
    empty.mkdir()
    argv = ["beam", "--data", str(files["test"]), "--init_checkpoint", str(files["base"]), "--output_file", str(out)]
    code, err = cli_result([*argv, "--checkpoint", str(empty)], capsys)
    assert code == 2 and "neither a checkpoint of `nlg train` (method.json) nor a PEFT, AdapterHub" in err

    work = tmp_path / "run"
    assert nlg(["train", *train_args(files, work, "adapter-h", "--max_step", 1)]) == 0
    code, err = cli_result([*argv, "--checkpoint", str(work)], capsys)  # the work_dir, not a checkpoint of it
    assert code == 2 and f"a work_dir? its latest checkpoint is {work / 'checkpoint-1'}" in err
    hub = tmp_path / "hub"
    hub.mkdir()
    for name in ("adapter_config.json", "adapter.safetensors"):  # as AdapterHub writes it: no method.json
        (hub / name).write_bytes((work / "checkpoint-1" / name).read_bytes())
    config = json.loads((hub / "adapter_config.json").read_text())
    config["config"]["use_gating"] = True
    (hub / "adapter_config.json").write_text(json.dumps(config))
    code, err = cli_result([*argv, "--checkpoint", str(hub)], capsys)
    assert code == 2 and err.count("\n") == 0
    assert "adapter_config.json: use_gating is True; adapter-h needs False" in err and not out.exists()


@pytest.mark.parametrize("name", ALL)
def test_static_shapes_train_every_method_as_eager_does(files, tmp_path, name: str) -> None:
    """--compile static holds the method's gradients in one flat buffer: the same training up to
    float rounding."""
    runs = {}
    for mode in ("none", "static"):
        work = tmp_path / mode
        assert nlg(["train", *train_args(files, work, name, "--max_step", 3, "--compile", mode)]) == 0
        runs[mode] = weights(work / "checkpoint-3")
    for key, expected in runs["none"].items():
        torch.testing.assert_close(runs["static"][key], expected, atol=1e-4, rtol=1e-4)


def test_resume_judges_method_flags_against_the_checkpoints_method(files, tmp_path, capsys) -> None:
    """Issue 29 case 9: --resume without --method: a method flag is the checkpoint's method's
    (adapter-h here), not LoRA's; case 4: method.json records the base's identity."""
    work = tmp_path / "h"
    assert nlg(["train", *train_args(files, work, "adapter-h", "--max_step", 3)]) == 0
    record = methods.read_record(work / "checkpoint-3")
    assert record.base_identity == methods.base_identity(files["base"]) and record.base_identity
    resume = [*train_args(files, work, "adapter-h", "--max_step", 6, "--resume", "latest", with_method=False)]
    code, err = cli_result(["train", *resume, "--adapter_dim", "112"], capsys)
    assert code == 2 and err.count("\n") == 0 and "not of --method lora" not in err
    assert "--adapter_dim: checkpoint" in err and "now 112" in err
    code, err = cli_result(["train", *resume, "--prefix_len", "5"], capsys)
    assert code == 2 and err.count("\n") == 0
    assert "--prefix_len is a setting of --method prefix, not of --method adapter-h" in err


@pytest.mark.parametrize("extra, message", [
    (["--full_finetune", "--method", "adapter-l"], "--full_finetune is --method full; it conflicts with --method adapter-l"),
    (["--lr", "0"], "--lr 0: must be > 0"),
])
def test_conflicting_or_useless_settings_are_refused(files, tmp_path, capsys, extra, message) -> None:
    work = tmp_path / "never"
    code, err = cli_result(["train", *train_args(files, work, "lora", with_method=False), *extra], capsys)
    assert code == 2 and err.count("\n") == 0 and message in err and not work.exists()
