"""--method fourierft (and, where the check is the same, --method ia3): counts against PEFT's,
PEFT's format both ways against PEFT's own classes, merged == unmerged, bad files in one line,
and `nlg train` / --resume / `nlg beam --checkpoint` as test_method_runs runs every method."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from helpers import (
    cli_result,
    hf_gpt2_dir,
    killed_run,
    metrics,
    tiny_config,
    trainable_base,
    write_copy_task,
)
from safetensors.torch import load_file, save_file

from nlg import methods
from nlg.cli import main as nlg
from nlg.files import InputError
from nlg.model import GPT
from nlg.weights import from_pretrained, to_transformers

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.usefixtures("single_thread")

# Small settings of both methods, as `nlg train` flags
SETTINGS = {"fourierft": {"fourierft_n_frequency": 60, "fourierft_scaling": 150.0},
            "ia3": {"ia3_targets": "k,v,ff"}}
NAMES = list(SETTINGS)


def peft_config(name: str, **changes):
    """PEFT's config of the same method (what our files say), for PEFT's own model."""
    if name == "fourierft":
        return peft.FourierFTConfig(**{"n_frequency": 60, "scaling": 150.0, "target_modules": ["c_attn"],
                                       "fan_in_fan_out": True, **changes})
    return peft.IA3Config(**{"target_modules": ["c_attn", "mlp.c_proj"], "feedforward_modules": ["mlp.c_proj"],
                             "fan_in_fan_out": True, **changes})


def settings(name: str, **changes):
    return methods.settings_of(name, {**SETTINGS[name], **changes})


def trained(model: GPT, name: str, seed: int = 1, **changes) -> GPT:
    """`model` with method `name`, every trainable parameter moved as training would."""
    method = methods.get(name)
    method.apply(model, settings(name, **changes))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in method.trainable(model).values():
            param.add_(0.1 * torch.randn(param.shape, generator=generator))
    return model.eval()


def base(seed: int = 0, **changes) -> GPT:
    torch.manual_seed(seed)
    model = GPT(tiny_config(**changes)).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    return model


def peft_trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ---------------------------------------------------------------------------------------------
# Counts
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("changes", [{}, {"n_layer": 3, "n_embd": 48, "n_head": 4}])
def test_fourierft_count_is_peft_count_and_what_trains(changes) -> None:
    ours = trained(base(**changes), "fourierft")
    method = methods.get("fourierft")
    counted = sum(p.numel() for p in method.trainable(ours).values())
    assert {n for n, p in ours.named_parameters() if p.requires_grad} == set(method.trainable(ours))
    count = method.count(methods.Shape.of(ours.config), settings("fourierft"))
    theirs = peft.get_peft_model(to_transformers(base(**changes)), peft_config("fourierft"))
    assert count == counted == peft_trainable(theirs) == ours.config.n_layer * 60


def test_fourierft_paper_count_and_card_counts() -> None:
    # n = 1000 on the fused c_attn: L·n, half the paper's 2·L·n on q and v apart (module docstring)
    assert methods.card_count("fourierft", "gpt2.md") == 24_000
    assert methods.card_count("fourierft", "gpt2.lg") == 36_000
    assert methods.card_count("fourierft", "gpt2.md", {"fourierft_n_frequency": 2000}) == 48_000
    (row,) = methods.get("fourierft").paper_rows["e2e"]
    assert row[1:4] == ("gpt2.md", "all", "0.048M") and len(row) == 8 and row[0] >= 100


# ---------------------------------------------------------------------------------------------
# PEFT's format both ways
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_peft_reads_what_we_save_with_our_logits_also_right_padded(tmp_path, name) -> None:
    model = base()
    hf = to_transformers(model)
    ours = trained(model, name)
    method = methods.get(name)
    method.save(ours, tmp_path, settings(name), base_model=None)
    theirs = peft.PeftModel.from_pretrained(hf, tmp_path).eval()
    x = torch.randint(0, 300, (3, 10), generator=torch.Generator().manual_seed(0))
    lengths = torch.tensor([10, 7, 4])
    mask = torch.arange(10)[None, :] < lengths[:, None]  # right-padded
    with torch.no_grad():
        expected = ours(x)
        torch.testing.assert_close(theirs(x).logits, expected, atol=1e-5, rtol=0)
        padded_ours = ours(x, key_mask=mask)
        padded_theirs = theirs(input_ids=x, attention_mask=mask.long()).logits
        torch.testing.assert_close(padded_theirs[mask], padded_ours[mask], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_what_peft_saves_is_recognised_loaded_and_decoded(tmp_path, name) -> None:
    hf_gpt2_dir(tmp_path / "base", tiny_config(vocab_size=50257))
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "base")
    theirs = peft.get_peft_model(hf, peft_config(name)).eval()
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for param in (p for p in theirs.parameters() if p.requires_grad):
            param.add_(0.1 * torch.randn(param.shape, generator=generator))
    theirs.save_pretrained(tmp_path / "adapter")
    found, found_settings, record = methods.detect(tmp_path / "adapter")
    assert found.name == name and record is None
    expected_targets = ("qkv",) if name == "fourierft" else ("q", "k", "v", "ff")
    assert found_settings.targets == expected_targets
    ours = from_pretrained(tmp_path / "base")
    found.load(ours, tmp_path / "adapter", None)
    x = torch.randint(0, 300, (2, 9))
    with torch.no_grad():
        expected = theirs(x).logits
        torch.testing.assert_close(ours.eval()(x), expected, atol=1e-5, rtol=0)
        found.prepare_inference(ours)
        torch.testing.assert_close(ours(x), expected, atol=1e-5, rtol=0)

    data = tmp_path / "x.jsonl"
    data.write_text("".join(json.dumps({"context": [5, 6, 7, i], "completion": [1]}) + "\n" for i in range(2)))
    out = tmp_path / "predict.jsonl"
    assert nlg(["beam", "--data", str(data), "--init_checkpoint", str(tmp_path / "base"), "--checkpoint",
                str(tmp_path / "adapter"), "--beam", "2", "--eval_len", "3", "--no_progress",
                "--output_file", str(out), "--device", "cpu"]) == 0
    assert len(out.read_text().splitlines()) == 2


@pytest.mark.parametrize("name", NAMES)
def test_merged_decoding_equals_unmerged(name) -> None:
    model = trained(base(), name)
    x = torch.randint(0, 300, (2, 11))
    with torch.no_grad():
        expected = model(x)
        methods.get(name).prepare_inference(model)
        torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=0)
    assert methods.get(name).merges


@pytest.mark.parametrize("name", NAMES)
def test_save_then_load_is_exact_and_detected(tmp_path, name) -> None:
    method = methods.get(name)
    ours = trained(base(), name)
    method.save(ours, tmp_path, settings(name), base_model="tiny")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(method.files)
    found, found_settings, _ = methods.detect(tmp_path)
    assert found is method and found_settings == settings(name)
    fresh = base()
    method.apply(fresh, settings(name))
    method.load(fresh, tmp_path, settings(name))
    x = torch.randint(0, 300, (2, 11))
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x), ours(x))


def _rewrite_config(directory: Path, **changes) -> Path:
    path = directory / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    return path


def _rewrite_tensor(directory: Path, change) -> tuple[Path, str]:
    path = directory / "adapter_model.safetensors"
    tensors = load_file(str(path))
    key = sorted(tensors)[0]
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        metadata = handle.metadata()
    tensors[key] = change(tensors[key].clone())
    save_file(tensors, str(path), metadata=metadata)
    return path, key.removeprefix("base_model.model.")


@pytest.mark.parametrize("case", ["n_frequency", "scaling", "targets", "shape", "nan", "peft_type"])
def test_bad_fourierft_files_are_one_line_naming_file_and_key(tmp_path, case) -> None:
    method = methods.get("fourierft")
    method.save(trained(base(), "fourierft"), tmp_path, settings("fourierft"), None)
    if case == "n_frequency":
        path, message = _rewrite_config(tmp_path, n_frequency="60"), "n_frequency: \"60\" is not an integer"
    elif case == "scaling":
        path, message = _rewrite_config(tmp_path, scaling=float("inf")), "scaling: Infinity must be a finite nonzero"
    elif case == "targets":
        path, message = _rewrite_config(tmp_path, target_modules=["wte"]), "target_modules: 'wte' names none"
    elif case == "peft_type":
        path, message = _rewrite_config(tmp_path, peft_type="LORA"), "peft_type 'LORA'; --method fourierft reads"
    elif case == "shape":
        path, key = _rewrite_tensor(tmp_path, lambda t: t[:-1])
        message = f"tensor {key} has shape (59,), the model needs (60,)"
    else:
        path, key = _rewrite_tensor(tmp_path, lambda t: t.fill_(float("nan")))
        message = f"tensor {key} has 60 non-finite values"
    with pytest.raises(InputError) as error:
        method.load(base(), tmp_path, None)
    text = str(error.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text, text


# ---------------------------------------------------------------------------------------------
# nlg train, --resume, nlg beam --checkpoint, method.json (as tests/methods/test_method_runs.py)
# ---------------------------------------------------------------------------------------------

CONFIG = tiny_config(vocab_size=128, n_positions=32)
LR = {"fourierft": "3e-1", "ia3": "1"}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fourierft-ia3-runs")
    return {"base": trainable_base(root / "base", CONFIG, seed=0, scale=5),
            "train": write_copy_task(root / "train.jsonl", 24, seed=1, vocab=128, lengths=(4, 6)),
            "test": write_copy_task(root / "test.jsonl", 3, seed=2, vocab=128, lengths=(4, 6)),
            "big_base": trainable_base(root / "big_base", replace(CONFIG, vocab_size=50257), seed=0, scale=5)}


def train_args(files: dict, work: Path, name: str, *extra, with_method: bool = True) -> list[str]:
    flags = ["--method", name, *(f for k, v in SETTINGS[name].items() for f in (f"--{k}", str(v)))] \
        if with_method else []
    return ["--train_data", str(files["train"]), "--init_checkpoint", str(files["base"]), "--work_dir", str(work),
            "--train_batch_size", "8", "--seq_len", "32", "--warmup_step", "0", "--lr", LR[name],
            "--label_smooth", "0", "--log_interval", "1", "--save_interval", "3", "--eval_interval", "1000",
            "--device", "cpu", *flags, *map(str, extra)]


@pytest.mark.parametrize("name", NAMES)
def test_training_moves_exactly_the_methods_parameters(files, tmp_path, capsys, name) -> None:
    from nlg.training.distributed import Runtime
    from nlg.training.settings import parse_args
    from nlg.training.trainer import Trainer, load_data

    work = tmp_path / "run"
    config = parse_args(train_args(files, work, name, "--max_step", 9))
    trainer = Trainer(config, Runtime(device=torch.device("cpu")), load_data(config))
    final = trainer.run()
    losses = [r["loss"] for r in metrics(work) if "loss" in r]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.2, losses
    method = methods.get(name)
    trained_names = set(method.trainable(trainer.model))
    base_params = dict(from_pretrained(files["base"]).named_parameters())
    for key, param in trainer.model.named_parameters():
        if key in trained_names:
            assert key not in base_params, key
        else:
            assert torch.equal(param, base_params[key]), f"frozen {key} changed"
    count = method.count(methods.Shape.of(CONFIG), methods.settings_of(name, config.to_json()))
    assert f"{count:,} trainable" in capsys.readouterr().out
    record = methods.read_record(final)
    assert (record.method, record.trainable_params) == (name, count)
    assert methods.settings_of(name, record.settings) == methods.settings_of(name, config.to_json())


@pytest.mark.parametrize("name", NAMES)
def test_killed_and_resumed_run_equals_uninterrupted(files, tmp_path, monkeypatch, name) -> None:
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    assert nlg(["train", *train_args(files, whole, name, "--max_step", 6)]) == 0
    killed_run(train_args(files, broken, name, "--max_step", 6), 5, monkeypatch)
    assert sorted(p.name for p in broken.glob("checkpoint-*")) == ["checkpoint-3"]
    assert nlg(["train", *train_args(files, broken, name, "--max_step", 6, "--resume", "latest",
                                     with_method=False)]) == 0
    expected = load_file(str(whole / "checkpoint-6" / "adapter_model.safetensors"))
    got = load_file(str(broken / "checkpoint-6" / "adapter_model.safetensors"))
    assert expected.keys() == got.keys() and expected
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_beam_reads_the_method_from_the_checkpoint(files, tmp_path, name) -> None:
    from nlg.beam import BeamConfig, beam_search, load_model

    work, out = tmp_path / "run", tmp_path / "predict.jsonl"
    argv = train_args(files, work, name, "--max_step", 2, "--save_interval", 2)
    argv[argv.index("--init_checkpoint") + 1] = str(files["big_base"])
    assert nlg(["train", *argv]) == 0
    assert nlg(["beam", "--data", str(files["test"]), "--init_checkpoint", str(files["big_base"]), "--checkpoint",
                str(work / "checkpoint-2"), "--beam", "2", "--eval_len", "4", "--no_progress",
                "--output_file", str(out)]) == 0
    got = [json.loads(line)["predict"] for line in out.read_text().splitlines()]
    model = load_model(str(files["big_base"]), None, str(work / "checkpoint-2"))
    contexts = [json.loads(line)["context"] for line in files["test"].read_text().splitlines()]
    cfg = BeamConfig(beam=2, eval_len=4, length_penalty=0.8, no_repeat_ngram_size=4, eos_ids=(50256, 628))
    assert got == beam_search(model, contexts, cfg)


@pytest.mark.parametrize("flag, value, message", [
    ("--fourierft_n_frequency", "0", "--fourierft_n_frequency must be >= 1"),
    ("--fourierft_targets", "q", "--fourierft_targets q: choose distinct ones from qkv,o,fc,proj"),
    ("--fourierft_n_frequency", "99999", "--fourierft_n_frequency 99999: must be at most the 192 x 64"),
])
def test_bad_fourierft_flags_are_one_line(files, tmp_path, capsys, flag, value, message) -> None:
    work = tmp_path / "never"
    code, err = cli_result(["train", *train_args(files, work, "fourierft"), flag, value], capsys)
    assert code == 2 and err.strip().count("\n") == 0 and message in err, err
    assert not list(work.glob("checkpoint-*"))


@pytest.mark.parametrize("name", NAMES)
def test_static_shapes_train_as_eager_does(files, tmp_path, name) -> None:
    """--compile static (one flat gradient buffer, Inductor): the same training up to rounding."""
    runs = {}
    for mode in ("none", "static"):
        work = tmp_path / mode
        assert nlg(["train", *train_args(files, work, name, "--max_step", 3, "--compile", mode)]) == 0
        runs[mode] = load_file(str(work / "checkpoint-3" / "adapter_model.safetensors"))
    for key, expected in runs["none"].items():
        torch.testing.assert_close(runs["static"][key], expected, atol=1e-4, rtol=1e-4)
