"""--method adalora against PEFT 0.22's own classes (AdaLoraConfig, get_peft_model, its training
step and update_and_allocate, save_pretrained / PeftModel.from_pretrained): counts, the layer, the
regulariser and the rank allocator step for step, PEFT's files both ways (before and after an
allocation: a pruned rank_pattern), merged == unmerged, bad flags and files in one line, and
`nlg train` (--grad_acc, --resume) / `nlg beam --checkpoint`."""

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
from nlg.methods.adalora import AdaLoRASettings
from nlg.methods.adalora.layer import SVDLinear, modules
from nlg.model import GPT
from nlg.weights import from_pretrained, to_transformers

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.usefixtures("single_thread")
ADALORA = methods.get("adalora")
FLAGS = {"adalora_init_r": 4, "adalora_target_r": 2, "adalora_tinit": 2, "adalora_tfinal": 3, "adalora_delta_t": 2}


def settings(**changes) -> AdaLoRASettings:
    return methods.settings_of("adalora", {**FLAGS, **changes})


def peft_config(total_step: int = 12, targets=("c_attn",), **changes):
    """PEFT's config of settings() (CAUSAL_LM: PEFT adds the regulariser only in a task model's forward)."""
    return peft.AdaLoraConfig(**{"task_type": "CAUSAL_LM", "init_r": 4, "target_r": 2, "tinit": 2, "tfinal": 3,
                                 "deltaT": 2, "total_step": total_step, "target_modules": list(targets),
                                 "lora_alpha": 8, "fan_in_fan_out": True, **changes})


def base(seed: int = 0, **changes) -> GPT:
    torch.manual_seed(seed)
    model = GPT(tiny_config(**changes)).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    return model


def peft_twin(model: GPT, config):
    """PEFT's AdaLoRA on a transformers copy of `model` (before our layers are added), its P, Λ, Q
    copied into `model`'s (to which AdaLoRA must be applied after)."""
    return peft.get_peft_model(to_transformers(model), config)


def copy_from_peft(ours: GPT, theirs) -> dict[str, tuple[torch.nn.Parameter, torch.nn.Parameter]]:
    """theirs' P, Λ, Q into ours; (ours, theirs) by our name."""
    found = dict(theirs.named_parameters())
    pairs = {name: (p, found[f"base_model.model.{name}.default"]) for name, p in ADALORA.trainable(ours).items()}
    with torch.no_grad():
        for ours_p, theirs_p in pairs.values():
            ours_p.copy_(theirs_p)
    return pairs


def lm_loss(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


def moved(model: GPT, seed: int = 1) -> GPT:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in ADALORA.trainable(model).values():
            param.add_(0.1 * torch.randn(param.shape, generator=generator))
    return model


def applied(model: GPT, seed: int = 1, **changes) -> GPT:
    """`model` with AdaLoRA of settings(**changes), every P, Λ, Q moved (no allocation yet)."""
    ADALORA.apply(model, settings(**changes))
    return moved(model, seed)


def allocated(model: GPT, seed: int = 1, steps: int = 12, **changes) -> GPT:
    """`model` with AdaLoRA of settings(**changes), trained `steps` steps by our hook as the
    trainer calls it: the final allocation made (masked Λ, pruned triplets in its files)."""
    s = settings(**changes)
    ADALORA.apply(model, s)
    moved(model, seed)
    hook = ADALORA.training_hook(model, s, steps)
    optimizer = torch.optim.AdamW(list(ADALORA.trainable(model).values()), lr=5e-2)
    generator = torch.Generator().manual_seed(seed)
    for step in range(steps):
        ids = torch.randint(0, model.config.vocab_size, (2, 10), generator=generator)
        lm_loss(model(ids), ids).backward()
        hook.regularise()
        optimizer.step()
        hook.after_update(step)
        optimizer.zero_grad()
    assert all(m.kept is not None and not m.kept.all() for m in modules(model).values())
    return model


# ---------------------------------------------------------------------------------------------
# Counts and the layer
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("changes", [{}, {"n_layer": 3, "n_embd": 48, "n_head": 4}])
@pytest.mark.parametrize("targets", [("qkv",), ("qkv", "o", "fc", "proj")])
def test_count_is_peft_count_and_what_trains(changes, targets) -> None:
    names = {"qkv": "c_attn", "o": "attn.c_proj", "fc": "c_fc", "proj": "mlp.c_proj"}
    ours = base(**changes)
    theirs = peft_twin(ours, peft_config(targets=[names[t] for t in targets]))
    ADALORA.apply(ours, settings(adalora_targets=",".join(targets)))
    trained = ADALORA.trainable(ours)
    assert {n for n, p in ours.named_parameters() if p.requires_grad} == set(trained)
    count = ADALORA.count(methods.Shape.of(ours.config), settings(adalora_targets=",".join(targets)))
    assert count == sum(p.numel() for p in trained.values()) == theirs.get_nb_trainable_parameters()[0]
    for name, param in trained.items():  # the same tensors, by the same names
        assert param.shape == dict(theirs.named_parameters())[f"base_model.model.{name}.default"].shape


def test_card_counts_and_the_paper_row() -> None:
    assert methods.card_count("adalora", "gpt2.md") == 24 * 12 * 4097 == 1_179_936  # PEFT's defaults
    assert methods.card_count("adalora", "gpt2.md", {"adalora_init_r": 4}) == 393_312
    assert methods.card_count("adalora", "gpt2.lg") == 36 * 12 * (4 * 1280 + 1)
    (row,) = ADALORA.paper_rows["e2e"]
    assert row[:4] == (110, "gpt2.md", "all", "0.38M") and len(row) == 8 and "VeRA" in row[7]
    assert row[4] == {"BLEU": 68.2, "NIST": 8.58, "METEOR": 44.1, "ROUGE_L": 70.7, "CIDEr": 2.35}
    from nlg.methods.counts import PAPER_COUNTS

    assert [r.paper for r in PAPER_COUNTS if r.method == "adalora"] == ["0.38M"]


def test_a_fresh_layer_is_peft_s_init_and_computes_its_forward() -> None:
    torch.manual_seed(0)
    ours = base()
    ADALORA.apply(ours, settings())
    layer = ours.transformer.h[0].attn.c_attn
    assert isinstance(layer, SVDLinear) and torch.equal(layer.lora_E, torch.zeros(4, 1))
    big = SVDLinear(torch.nn.Linear(512, 512), 256, 8.0, 0.0)  # normal std 0.02, as PEFT's reset
    assert abs(big.lora_A.std().item() - 0.02) < 1e-3 and abs(big.lora_B.std().item() - 0.02) < 1e-3
    with torch.no_grad():
        for kind in ("lora_A", "lora_E", "lora_B"):
            getattr(layer, kind).normal_()
        x = torch.randn(3, 64)
        expected = torch.nn.functional.linear(x, layer.weight, layer.bias) \
            + (x @ (layer.lora_A * layer.lora_E).T @ layer.lora_B.T) * 8.0 / (4 + 1e-5)
        torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# The regulariser and the allocator, step for step against PEFT's
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("changes", [{}, {"adalora_tinit": 0, "adalora_tfinal": 0, "adalora_delta_t": 1}])
def test_training_steps_match_peft_s_regulariser_and_rank_allocator(changes) -> None:
    """The same AdamW steps on the same batches: PEFT's loss with its regulariser, backward,
    step, update_and_allocate(step); ours: the mean loss's backward, hook.regularise(), step,
    hook.after_update(step) (as Stepper.update calls them). Weights to 1e-5 and the same masks."""
    total = 12
    peft_keys = {"adalora_tinit": "tinit", "adalora_tfinal": "tfinal", "adalora_delta_t": "deltaT"}
    ours = base()
    config = peft_config(total, **{peft_keys[k]: v for k, v in changes.items()})
    theirs = peft_twin(ours, config).eval()
    s = settings(**changes)
    ADALORA.apply(ours, s)
    pairs = copy_from_peft(ours, theirs)
    hook = ADALORA.training_hook(ours, s, total)
    ours_opt = torch.optim.AdamW([a for a, _ in pairs.values()], lr=5e-2)
    theirs_opt = torch.optim.AdamW([b for _, b in pairs.values()], lr=5e-2)
    generator = torch.Generator().manual_seed(1)
    allocations = 0
    for step in range(total):
        ids = torch.randint(0, 300, (2, 10), generator=generator)
        lm_loss(ours(ids), ids).backward()
        hook.regularise()
        ours_opt.step()
        hook.after_update(step)
        ours_opt.zero_grad()
        theirs(input_ids=ids, labels=ids).loss.backward()
        theirs_opt.step()
        theirs.base_model.update_and_allocate(step)
        theirs_opt.zero_grad()
        for name, (a, b) in pairs.items():
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0, msg=f"step {step}: {name}")
        pattern = config.rank_pattern
        for name, layer in modules(ours).items():
            if pattern is None:
                assert layer.kept is None, step
            else:
                assert layer.kept.tolist() == pattern[f"{name}.lora_E.default"], (step, name)
                allocations += 1
    assert allocations and not all(all(v) for v in config.rank_pattern.values())  # something was pruned


def test_budget_schedule_is_peft_s() -> None:
    from peft.tuners.adalora.layer import RankAllocator

    for total, tinit, tfinal, delta_t in ((12, 2, 3, 2), (100, 0, 0, 1), (50, 10, 5, 3)):
        ours = base()
        s = settings(adalora_tinit=tinit, adalora_tfinal=tfinal, adalora_delta_t=delta_t)
        config = peft_config(total, tinit=tinit, tfinal=tfinal, deltaT=delta_t)
        allocator = RankAllocator(peft_twin(ours, config).base_model.model, config, "default")
        ADALORA.apply(ours, s)
        hook = ADALORA.training_hook(ours, s, total)
        assert (hook.init_budget, hook.target_budget) == (allocator.init_bgt, allocator.target_bgt) == (8, 4)
        for step in range(total + 1):
            assert hook.budget(step) == allocator.budget_schedule(step), (total, step)


def test_a_target_rank_equal_to_the_initial_one_is_refused_as_peft_s_allocator_fails_there() -> None:
    """b_T = b(0): PEFT's first masking step calls torch.kthvalue(k=0), which raises; the flags
    refuse it (and in any run they allow, every masking step prunes at least one triplet)."""
    from peft.tuners.adalora.layer import RankAllocator

    config = peft_config(12, target_r=4, tinit=0, tfinal=0, deltaT=1)
    theirs = peft_twin(base(), config)
    allocator = RankAllocator(theirs.base_model.model, config, "default")
    ids = torch.randint(0, 300, (2, 10))
    theirs(input_ids=ids, labels=ids).loss.backward()
    with pytest.raises(RuntimeError, match="kthvalue"):
        allocator.update_and_allocate(theirs.base_model.model, 1)
    assert ADALORA.check({**ADALORA.defaults, **FLAGS, "adalora_target_r": 4}) == [
        "--adalora_target_r 4: must be less than --adalora_init_r 4 (the budget prunes ranks; PEFT's allocator "
        "fails when it prunes none)"]
    hook = ADALORA.training_hook(applied(base()), settings(adalora_tinit=0, adalora_tfinal=0), 100_000)
    assert all(hook.budget(step)[0] < hook.init_budget for step in range(1, 100_000, 997))


# ---------------------------------------------------------------------------------------------
# PEFT's format both ways
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("allocate", [False, True])
@pytest.mark.parametrize("targets", ["qkv", "qkv,o,fc,proj"])
def test_peft_reads_what_we_save_with_our_logits_also_right_padded(tmp_path, allocate, targets) -> None:
    model = base()
    hf = to_transformers(model)
    ours = (allocated if allocate else applied)(model, adalora_targets=targets)
    ADALORA.save(ours.eval(), tmp_path, settings(adalora_targets=targets), base_model=None)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["peft_type"] == "ADALORA" and (config["rank_pattern"] is None) != allocate
    if allocate:
        assert config["total_step"] == 12 and set(config["rank_pattern"]) == {f"{n}.lora_E" for n in modules(ours)}
        tensors = load_file(str(tmp_path / "adapter_model.safetensors"))
        for name, layer in modules(ours).items():
            assert tensors[f"base_model.model.{name}.lora_A"].shape[0] == int(layer.kept.sum()) < 4
    theirs = peft.PeftModel.from_pretrained(hf, tmp_path).eval()
    x = torch.randint(0, 300, (3, 10), generator=torch.Generator().manual_seed(0))
    mask = torch.arange(10)[None, :] < torch.tensor([10, 7, 4])[:, None]  # right-padded
    with torch.no_grad():
        torch.testing.assert_close(theirs(x).logits, ours(x), atol=1e-5, rtol=0)
        padded_theirs = theirs(input_ids=x, attention_mask=mask.long()).logits
        torch.testing.assert_close(padded_theirs[mask], ours(x, key_mask=mask)[mask], atol=1e-5, rtol=0)


@pytest.mark.parametrize("allocate", [False, True])
def test_what_peft_saves_is_recognised_loaded_and_decoded(tmp_path, allocate) -> None:
    hf_gpt2_dir(tmp_path / "base", tiny_config(vocab_size=50257))
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "base")
    config = peft_config(12)
    theirs = peft.get_peft_model(hf, config)
    generator = torch.Generator().manual_seed(3)
    optimizer = torch.optim.AdamW([p for p in theirs.parameters() if p.requires_grad], lr=5e-2)
    for step in range(12 if allocate else 0):  # PEFT's own loop: a pruned rank_pattern at the end
        ids = torch.randint(0, 300, (2, 10), generator=generator)
        theirs(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        theirs.base_model.update_and_allocate(step)
        optimizer.zero_grad()
    if not allocate:
        with torch.no_grad():
            for param in (p for p in theirs.parameters() if p.requires_grad):
                param.add_(0.1 * torch.randn(param.shape, generator=generator))
    theirs.eval().save_pretrained(tmp_path / "adapter")
    written = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert (written["rank_pattern"] is not None) == allocate
    if allocate:
        assert not all(all(v) for v in written["rank_pattern"].values())
    found, found_settings, record = methods.detect(tmp_path / "adapter")
    assert found is ADALORA and record is None
    assert found_settings == replace(settings(), alpha=8.0)
    ours = from_pretrained(tmp_path / "base")
    found.load(ours, tmp_path / "adapter", None)
    reloaded = peft.PeftModel.from_pretrained(transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "base"),
                                              tmp_path / "adapter").eval()
    x = torch.randint(0, 300, (2, 9))
    with torch.no_grad():
        expected = reloaded(x).logits
        torch.testing.assert_close(ours.eval()(x), expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(theirs(x).logits, expected, atol=1e-5, rtol=0)
        found.prepare_inference(ours)
        torch.testing.assert_close(ours(x), expected, atol=1e-5, rtol=0)

    data = tmp_path / "x.jsonl"
    data.write_text("".join(json.dumps({"context": [5, 6, 7, i], "completion": [1]}) + "\n" for i in range(2)))
    out = tmp_path / "predict.jsonl"
    assert nlg(["beam", "--data", str(data), "--init_checkpoint", str(tmp_path / "base"), "--checkpoint",
                str(tmp_path / "adapter"), "--beam", "2", "--eval_len", "3", "--no_progress",
                "--output_file", str(out), "--device", "cpu"]) == 0
    assert len(out.read_text().splitlines()) == 2


def test_save_then_load_is_exact_after_an_allocation(tmp_path) -> None:
    ours = allocated(base()).eval()
    ADALORA.save(ours, tmp_path, settings(), base_model="tiny")
    fresh = base()
    ADALORA.apply(fresh, settings())
    ADALORA.load(fresh, tmp_path, settings())
    x = torch.randint(0, 300, (2, 11))
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(x), ours(x), atol=1e-6, rtol=0)
    for name, layer in modules(fresh).items():
        assert torch.equal(layer.kept, modules(ours)[name].kept)
        assert not layer.lora_A[~layer.kept].any()  # the pruned triplets come back as zeros
    ADALORA.save(fresh, tmp_path / "again", settings(), base_model="tiny")  # and are written as they were read
    assert load_file(str(tmp_path / "again" / "adapter_model.safetensors")).keys() == \
        load_file(str(tmp_path / "adapter_model.safetensors")).keys()
    assert json.loads((tmp_path / "again" / "adapter_config.json").read_text()) == \
        json.loads((tmp_path / "adapter_config.json").read_text())


@pytest.mark.parametrize("allocate", [False, True])
def test_merged_decoding_equals_unmerged(allocate) -> None:
    model = (allocated if allocate else applied)(base())
    x = torch.randint(0, 300, (2, 11))
    with torch.no_grad():
        expected = model.eval()(x)
        ADALORA.prepare_inference(model)
        assert all(m.merged for m in modules(model).values())
        torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------
# Bad files and flags: one line naming the file and key, or the flag
# ---------------------------------------------------------------------------------------------


def _rewrite_config(directory: Path, **changes) -> Path:
    path = directory / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    return path


def _rewrite_tensor(directory: Path, change) -> tuple[Path, str]:
    path = directory / "adapter_model.safetensors"
    tensors = load_file(str(path))
    key = sorted(tensors)[0]
    tensors[key] = change(tensors[key].clone())
    save_file(tensors, str(path), metadata={"format": "pt"})
    return path, key.removeprefix("base_model.model.")


@pytest.mark.parametrize("case", ["init_r", "beta1", "alpha", "targets", "peft_type", "pattern_length",
                                  "pattern_module", "pattern_missing", "shape", "nan"])
def test_bad_files_are_one_line_naming_file_and_key(tmp_path, case) -> None:
    ours = allocated(base())
    ADALORA.save(ours, tmp_path, settings(), None)
    pattern = json.loads((tmp_path / "adapter_config.json").read_text())["rank_pattern"]
    first = sorted(pattern)[0]
    if case == "init_r":
        path, message = _rewrite_config(tmp_path, init_r="4"), "init_r: \"4\" is not an integer"
    elif case == "beta1":
        path, message = _rewrite_config(tmp_path, beta1=1.5), "beta1: 1.5 must be a number in (0, 1)"
    elif case == "alpha":
        path, message = _rewrite_config(tmp_path, lora_alpha=0), "lora_alpha: 0 must be a number in (0"
    elif case == "targets":
        path, message = _rewrite_config(tmp_path, target_modules=["wte"]), "target_modules: 'wte' names none"
    elif case == "peft_type":
        path, message = _rewrite_config(tmp_path, peft_type="LORA"), "peft_type 'LORA'; --method adalora reads"
    elif case == "pattern_length":
        path = _rewrite_config(tmp_path, rank_pattern={**pattern, first: [True]})
        message = "rank_pattern: must map each module's lora_E to a list of 4 true/false"
    elif case == "pattern_module":
        path = _rewrite_config(tmp_path, rank_pattern={**pattern, "transformer.h.9.attn.c_attn.lora_E": [True] * 4})
        message = "rank_pattern: transformer.h.9.attn.c_attn.lora_E is not a module the model adapts"
    elif case == "pattern_missing":
        path = _rewrite_config(tmp_path, rank_pattern={k: v for k, v in pattern.items() if k != first})
        message = f"rank_pattern: no entry for {first}"
    elif case == "shape":
        path, key = _rewrite_tensor(tmp_path, lambda t: t[:-1])
        message = f"tensor {key} has shape"
    else:
        path, key = _rewrite_tensor(tmp_path, lambda t: t.fill_(float("nan")))
        message = f"tensor {key} has"
    with pytest.raises(InputError) as error:
        ADALORA.load(base(), tmp_path, None)
    text = str(error.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text, text


def test_a_file_of_another_rank_does_not_load_into_the_model(tmp_path) -> None:
    ADALORA.save(applied(base()), tmp_path, settings(), None)
    other = base()
    ADALORA.apply(other, settings(adalora_init_r=3, adalora_target_r=1))
    with pytest.raises(InputError, match=r"adapter_config\.json: AdaLoRA init_r=4 .*; the model has AdaLoRA init_r=3"):
        ADALORA.load(other, tmp_path, settings(adalora_init_r=3, adalora_target_r=1))


@pytest.mark.parametrize("values, message", [
    ({"adalora_target_r": 5}, "--adalora_target_r 5: must be less than --adalora_init_r 4"),
    ({"adalora_beta1": 1.0}, "--adalora_beta1 1.0: must be in (0, 1)"),
    ({"adalora_orth_reg_weight": -1.0}, "--adalora_orth_reg_weight -1.0: must be >= 0"),
    ({"adalora_alpha": 0.0}, "--adalora_alpha 0.0: must be > 0"),
    ({"adalora_dropout": 1.0}, "--adalora_dropout must be in [0, 1)"),
    ({"adalora_targets": "q,v"}, "--adalora_targets q,v: choose distinct ones from qkv,o,fc,proj"),
    ({"adalora_tinit": -1}, "--adalora_tinit must be >= 0"),
    ({"adalora_delta_t": 0}, "--adalora_delta_t must be >= 1"),
])
def test_bad_values_are_named(values, message) -> None:
    problems = ADALORA.check({**ADALORA.defaults, **FLAGS, **values})
    assert problems and message in problems[0], problems


# ---------------------------------------------------------------------------------------------
# nlg train (the hook in the trainer), --grad_acc, --resume, nlg beam --checkpoint, method.json
# ---------------------------------------------------------------------------------------------

CONFIG = tiny_config(vocab_size=128, n_positions=32)
RUN_FLAGS = {"adalora_init_r": 4, "adalora_target_r": 2, "adalora_tinit": 1, "adalora_tfinal": 2,
             "adalora_delta_t": 2}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adalora-runs")
    return {"base": trainable_base(root / "base", CONFIG, seed=0, scale=5),
            "train": write_copy_task(root / "train.jsonl", 24, seed=1, vocab=128, lengths=(4, 6)),
            "test": write_copy_task(root / "test.jsonl", 3, seed=2, vocab=128, lengths=(4, 6))}


def train_args(files: dict, work: Path, *extra, with_method: bool = True, **flags) -> list[str]:
    method = ["--method", "adalora", *(f for k, v in {**RUN_FLAGS, **flags}.items() for f in (f"--{k}", str(v)))] \
        if with_method else []
    return ["--train_data", str(files["train"]), "--init_checkpoint", str(files["base"]), "--work_dir", str(work),
            "--train_batch_size", "8", "--seq_len", "32", "--warmup_step", "0", "--lr", "3e-1",
            "--label_smooth", "0", "--log_interval", "1", "--save_interval", "4", "--eval_interval", "1000",
            "--device", "cpu", *method, *map(str, extra)]


def test_training_allocates_ranks_and_the_checkpoint_says_so(files, tmp_path, capsys) -> None:
    from nlg.training.distributed import Runtime
    from nlg.training.settings import parse_args
    from nlg.training.trainer import Trainer, load_data

    work = tmp_path / "run"
    config = parse_args(train_args(files, work, "--max_step", 9))
    trainer = Trainer(config, Runtime(device=torch.device("cpu")), load_data(config))
    final = trainer.run()
    losses = [r["loss"] for r in metrics(work) if "loss" in r]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.3, losses
    out = capsys.readouterr().out
    count = ADALORA.count(methods.Shape.of(CONFIG), config.method_settings)
    assert f"{count:,} trainable" in out
    kept = {name: layer.kept for name, layer in modules(trainer.model).items()}
    assert all(k is not None for k in kept.values()) and sum(int(k.sum()) for k in kept.values()) == 2 * 2
    for layer in modules(trainer.model).values():
        assert not layer.lora_E[~layer.kept].any()  # masked at every step of the final phase
    written = json.loads((final / "adapter_config.json").read_text())
    assert written["total_step"] == 9 and written["rank_pattern"] == {
        f"{name}.lora_E": k.tolist() for name, k in kept.items()}
    state = torch.load(final / "training_state.pt", weights_only=True)["method_state"]
    assert set(state) == {"exp_avg_ipt", "exp_avg_unc", "kept", "weights"} and not state["exp_avg_ipt"]  # cleared
    record = methods.read_record(final)
    assert (record.method, record.trainable_params) == ("adalora", count)
    assert methods.settings_of("adalora", record.settings) == config.method_settings


def test_gradient_accumulation_gives_the_larger_batch_s_update(files, tmp_path) -> None:
    """The regulariser's gradient joins the step's mean-loss gradient once per update."""
    assert nlg(["train", *train_args(files, tmp_path / "big", "--max_step", 4)]) == 0
    assert nlg(["train", *train_args(files, tmp_path / "acc", "--max_step", 4, "--train_batch_size", 4,
                                     "--grad_acc", 2)]) == 0
    big = load_file(str(tmp_path / "big" / "checkpoint-4" / "adapter_model.safetensors"))
    acc = load_file(str(tmp_path / "acc" / "checkpoint-4" / "adapter_model.safetensors"))
    assert big.keys() == acc.keys()
    for key in big:
        torch.testing.assert_close(acc[key], big[key], atol=1e-5, rtol=0)


def test_killed_and_resumed_run_equals_uninterrupted(files, tmp_path, monkeypatch) -> None:
    """Killed after checkpoint-3 (an allocation made, triplets pruned from its files, the EMAs
    running), resumed through the budget phase (checkpoint-6) into the final one (checkpoint-9):
    the same files and the same hook state (EMAs, allocation, every triplet) as the whole run's."""
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    argv = ("--max_step", 9, "--save_interval", 3)
    assert nlg(["train", *train_args(files, whole, *argv)]) == 0
    killed_run(train_args(files, broken, *argv), 5, monkeypatch)
    assert sorted(p.name for p in broken.glob("checkpoint-*")) == ["checkpoint-3"]
    assert json.loads((broken / "checkpoint-3" / "adapter_config.json").read_text())["rank_pattern"]
    assert nlg(["train", *train_args(files, broken, *argv, "--resume", "latest", with_method=False)]) == 0
    for checkpoint in ("checkpoint-6", "checkpoint-9"):
        assert (broken / checkpoint / "adapter_config.json").read_text() == \
            (whole / checkpoint / "adapter_config.json").read_text()
        expected = load_file(str(whole / checkpoint / "adapter_model.safetensors"))
        got = load_file(str(broken / checkpoint / "adapter_model.safetensors"))
        assert expected.keys() == got.keys()
        for key in expected:
            torch.testing.assert_close(got[key], expected[key], atol=1e-6, rtol=0)
        states = [torch.load(d / checkpoint / "training_state.pt", weights_only=True)["method_state"]
                  for d in (whole, broken)]
        assert bool(states[0]["exp_avg_ipt"]) == (checkpoint == "checkpoint-6")  # cleared at T - tfinal = 7
        for part in ("exp_avg_ipt", "exp_avg_unc", "kept", "weights"):
            assert states[0][part].keys() == states[1][part].keys(), part
            for key, tensor in states[0][part].items():
                torch.testing.assert_close(states[1][part][key], tensor, atol=1e-6, rtol=0, msg=f"{part} {key}")


def test_beam_decodes_the_checkpoint(files, tmp_path) -> None:
    from nlg.beam import BeamConfig, beam_search, load_model

    big_base = trainable_base(tmp_path / "big_base", replace(CONFIG, vocab_size=50257), seed=0, scale=5)
    work, out = tmp_path / "run", tmp_path / "predict.jsonl"
    argv = train_args(files, work, "--max_step", 6, "--save_interval", 6)
    argv[argv.index("--init_checkpoint") + 1] = str(big_base)
    assert nlg(["train", *argv]) == 0
    assert nlg(["beam", "--data", str(files["test"]), "--init_checkpoint", str(big_base), "--checkpoint",
                str(work / "checkpoint-6"), "--beam", "2", "--eval_len", "4", "--no_progress",
                "--output_file", str(out)]) == 0
    got = [json.loads(line)["predict"] for line in out.read_text().splitlines()]
    model = load_model(str(big_base), None, str(work / "checkpoint-6"))
    assert all(m.merged and m.kept is not None for m in modules(model).values())
    contexts = [json.loads(line)["context"] for line in files["test"].read_text().splitlines()]
    cfg = BeamConfig(beam=2, eval_len=4, length_penalty=0.8, no_repeat_ngram_size=4, eos_ids=(50256, 628))
    assert got == beam_search(model, contexts, cfg)


@pytest.mark.parametrize("extra, message", [
    (["--adalora_tinit", "5", "--adalora_tfinal", "2", "--max_step", "6"],
     "--adalora_tinit 5 and --adalora_tfinal 2 leave no steps to allocate ranks in this run's 6"),
    (["--adalora_target_r", "4"], "--adalora_target_r 4: must be less than --adalora_init_r 4"),
    (["--adalora_targets", "q"], "--adalora_targets q: choose distinct ones from qkv,o,fc,proj"),
    (["--adalora_beta2", "0"], "--adalora_beta2 0.0: must be in (0, 1)"),
])
def test_bad_flags_are_one_line(files, tmp_path, capsys, extra, message) -> None:
    work = tmp_path / "never"
    code, err = cli_result(["train", *train_args(files, work, "--max_step", 6), *extra], capsys)
    assert code == 2 and err.strip().count("\n") == 0 and message in err, err
    assert not list(work.glob("checkpoint-*"))
