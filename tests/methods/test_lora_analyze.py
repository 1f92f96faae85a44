"""Adapter analysis: every quantity checked on adapters whose answer is known by construction."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import hf_gpt2_dir, tiny_config, trained_like

from nlg.cli import run_main
from nlg.methods.lora.analyze import (
    Update,
    amplification,
    effective_rank,
    fit_power_law,
    low_rank_svd,
    main,
    numerical_rank,
    projection_norm,
    random_orthonormal,
    read_updates,
    singular_values,
    stable_rank,
    subspace_similarity,
    subspace_similarity_grid,
    top_singular_values,
)
from nlg.methods.lora.layer import add_lora, lora_modules, lora_parameters
from nlg.methods.lora.peft_files import ADAPTER_WEIGHTS, load_adapter, save_adapter
from nlg.model import GPT
from nlg.weights import from_pretrained, save_pretrained


def orthonormal(rows: int, cols: int, seed: int) -> np.ndarray:
    return np.linalg.qr(np.random.default_rng(seed).standard_normal((rows, cols)))[0]


def save_base(model: GPT, directory) -> Path:
    """Write the model as a published checkpoint (Conv1D projections stored (in, out)); return its
    weights file, which the tests pass on its own."""
    return save_pretrained(model, directory) / "model.safetensors"


def run(argv, capsys) -> tuple[int, str, str]:
    code = run_main(main, [str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# --- pure quantities ------------------------------------------------------------------------


def test_spectrum_of_a_matrix_built_from_chosen_singular_values():
    sigma = np.array([5.0, 3.0, 2.0, 0.5])
    U, V = orthonormal(40, 4, 0), orthonormal(30, 4, 1)
    scaling = 2.5
    B, A = U * sigma / scaling, V.T  # ΔW = scaling · B A = U diag(sigma) Vᵀ
    dense = scaling * B @ A
    assert np.allclose(singular_values(dense)[:4], sigma) and np.allclose(singular_values(dense)[4:], 0, atol=1e-12)
    U2, s, Vh = low_rank_svd(B, A, scaling)
    assert np.allclose(s, sigma, rtol=1e-12)
    assert np.allclose(U2 * s @ Vh, dense, atol=1e-12)
    assert np.allclose(U2.T @ U2, np.eye(4)) and np.allclose(Vh @ Vh.T, np.eye(4))
    assert stable_rank(s) == pytest.approx(np.sum(sigma**2) / 25.0)
    p = sigma / sigma.sum()
    assert effective_rank(s) == pytest.approx(math.exp(-np.sum(p * np.log(p))))
    assert numerical_rank(s, dense.shape) == 4
    for matrix in (dense, dense.T, np.random.default_rng(2).standard_normal((30, 50))):
        assert np.allclose(top_singular_values(matrix, 3), singular_values(matrix)[:3], rtol=1e-10)


def test_ranks_at_their_extremes():
    assert effective_rank(np.ones(6)) == pytest.approx(6.0)
    assert stable_rank(np.ones(6)) == pytest.approx(6.0)
    assert effective_rank(np.array([3.0, 0.0, 0.0])) == pytest.approx(1.0)
    assert stable_rank(np.array([3.0, 0.0, 0.0])) == pytest.approx(1.0)
    assert stable_rank(np.zeros(3)) == 0.0 and effective_rank(np.zeros(3)) == 0.0
    assert numerical_rank(np.array([1.0, 1e-3, 1e-17]), (10, 10)) == 2
    assert numerical_rank(np.zeros(3), (10, 10)) == 0


def pareto(n: int, alpha: float, xmin: float, rng: np.random.Generator) -> np.ndarray:
    """Inverse-CDF sample of p(x) ∝ x^-alpha, x >= xmin: x = xmin (1 - u)^(-1 / (alpha - 1))."""
    return xmin * (1.0 - rng.random(n)) ** (-1.0 / (alpha - 1.0))


@pytest.mark.parametrize("alpha", [2.0, 3.5])
def test_power_law_recovers_a_planted_exponent(alpha):
    fit = fit_power_law(pareto(2000, alpha, 0.7, np.random.default_rng(3)))
    assert abs(fit.alpha - alpha) < max(4 * fit.sigma, 0.1)
    assert 0.7 <= fit.xmin < 1.4 and fit.n_tail > 500
    assert fit.ks_distance < 0.05


def test_power_law_finds_where_the_tail_starts():
    rng = np.random.default_rng(7)
    body = rng.uniform(0.05, 1.0, 1500)  # not a power law: the fit has to cut it off
    tail = pareto(2000, 2.5, 1.0, rng)
    fit = fit_power_law(np.concatenate([body, tail]))
    assert 0.95 <= fit.xmin < 1.5
    assert abs(fit.alpha - 2.5) < 0.15
    naive = 1 + 3500 / np.sum(np.log(np.concatenate([body, tail]) / 0.05))  # xmin = min(x)
    assert abs(naive - 2.5) > 0.5  # so choosing xmin matters


def test_power_law_by_hand():
    # xmin = 1: alpha = 1 + 3 / (ln 2 + ln 4) = 1 + 1/ln 2, so P(2) = 1 - 1/e and P(4) = 1 - 1/e²,
    # against 1/3 and 2/3 of the points below: D = 1 - 1/e - 1/3 = 0.299. xmin = 2 does worse
    # (alpha = 1 + 2/ln 2, D = P(4) - 1/2 = 0.364); 4 alone is no tail.
    fit = fit_power_law(np.array([4.0, 1.0, 2.0, -3.0, 0.0]))
    assert fit.xmin == 1.0 and fit.n_tail == 3
    assert fit.alpha == pytest.approx(1 + 1 / math.log(2))
    assert fit.ks_distance == pytest.approx(1 - math.exp(-1) - 1 / 3)
    assert fit.sigma == pytest.approx((fit.alpha - 1) / math.sqrt(3))


def test_power_law_needs_values():
    with pytest.raises(ValueError):
        fit_power_law(np.array([1.0]))
    with pytest.raises(ValueError):
        fit_power_law(np.array([2.0, 2.0, 0.0]))


def test_amplification_of_a_weight_built_around_the_update():
    out, inp, r, gain = 48, 32, 4, 0.25
    Uf, Vf = orthonormal(out, out, 10), orthonormal(inp, inp, 11)
    U, V = Uf[:, :r], Vf[:, :r]
    sigma = np.array([4.0, 2.0, 1.0, 0.5])
    delta = U * sigma @ V.T
    # W holds gain · ΔW in ΔW's own subspaces, plus anything in the orthogonal complements.
    rest = np.random.default_rng(12).standard_normal((out - r, inp - r))
    W = gain * delta + Uf[:, r:] @ rest @ Vf[:, r:].T
    U2, s, Vh = low_rank_svd(U * sigma, V.T)
    assert projection_norm(W, U2, Vh.T) == pytest.approx(gain * np.linalg.norm(sigma))
    assert amplification(W, U2, s, Vh) == pytest.approx(1 / gain)
    assert amplification(Uf[:, r:] @ rest @ Vf[:, r:].T, U2, s, Vh) > 1e12  # W misses ΔW entirely
    assert amplification(np.zeros((out, inp)), U2, s, Vh) == math.inf
    assert amplification(W, U2, np.zeros(r), Vh) == pytest.approx(0.0)


def test_random_directions_are_orthonormal_and_project_as_expected():
    rng = np.random.default_rng(0)
    W = np.random.default_rng(1).standard_normal((30, 20))
    Q = random_orthonormal(30, 4, rng)
    assert np.allclose(Q.T @ Q, np.eye(4))
    # E ‖Uᵀ W V‖_F² = r² ‖W‖_F² / (out · in) for independent uniformly random U, V.
    mean = np.mean([projection_norm(W, random_orthonormal(30, 4, rng), random_orthonormal(20, 4, rng)) ** 2
                    for _ in range(3000)])
    assert mean == pytest.approx(16 * np.sum(W**2) / 600, rel=0.05)


def test_subspace_similarity_same_nested_and_orthogonal():
    basis = orthonormal(50, 12, 5)
    rotation = orthonormal(4, 4, 6)
    same = basis[:, :4] @ rotation  # another basis of the same subspace
    assert subspace_similarity(basis[:, :4], same, 4, 4) == pytest.approx(1.0)
    assert subspace_similarity(basis[:, :4], basis[:, 4:8], 4, 4) == pytest.approx(0.0, abs=1e-12)
    # rank 2 inside rank 8: φ(2, 8) = 1 (min(i, j) normalises), φ(2, 2) ≠ 1 unless ordered alike
    assert subspace_similarity(basis[:, :2], basis[:, :8], 2, 8) == pytest.approx(1.0)
    half = np.hstack([basis[:, :1], basis[:, 8:9]])  # shares one of its two directions
    assert subspace_similarity(half, basis[:, :4], 2, 4) == pytest.approx(0.5)
    other = orthonormal(50, 6, 7)
    grid = subspace_similarity_grid(basis[:, :5], other)
    assert grid.shape == (5, 6)
    for i in range(1, 6):
        for j in range(1, 7):
            assert grid[i - 1, j - 1] == pytest.approx(subspace_similarity(basis[:, :5], other, i, j))
    with pytest.raises(ValueError):
        subspace_similarity(basis[:, :4], other, 5, 1)


# --- reading adapters -------------------------------------------------------------------------


@pytest.mark.parametrize("targets", [("q", "v"), ("q", "k", "v", "o", "fc", "proj"), ("qkv", "fc")])
def test_updates_equal_what_merging_adds_to_the_weights(tmp_path, targets):
    torch.manual_seed(0)
    model = trained_like(add_lora(GPT(tiny_config()), rank=3, alpha=12, targets=targets))
    save_adapter(model, tmp_path)
    before = {name: module.weight.detach().clone() for name, module in lora_modules(model).items()}
    for module in lora_modules(model).values():
        module.merge()
    config, updates = read_updates(tmp_path)
    assert config.targets == targets and config.scaling == 4.0
    per_layer = {u.module for u in updates if u.layer == 0}
    assert per_layer == set(targets) and len(updates) == 2 * len(targets)
    paths = {"q": ("attn.c_attn", 0), "k": ("attn.c_attn", 1), "v": ("attn.c_attn", 2),
             "qkv": ("attn.c_attn", None), "o": ("attn.c_proj", None),
             "fc": ("mlp.c_fc", None), "proj": ("mlp.c_proj", None)}
    for update in updates:
        path, part = paths[update.module]
        name = f"transformer.h.{update.layer}.{path}"
        added = (lora_modules(model)[name].weight.detach() - before[name]).double().numpy()
        if part is not None:
            added = added[part * 64 : (part + 1) * 64]
        assert np.allclose(update.dense(), added, atol=1e-6), (update.layer, update.module)


def test_peft_written_adapter_is_one_fused_qkv_matrix(tmp_path):
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    hf = transformers.GPT2LMHeadModel.from_pretrained(hf_gpt2_dir(tmp_path / "base"))
    lora = peft.LoraConfig(r=4, lora_alpha=16, target_modules=["c_attn", "c_fc"], fan_in_fan_out=True,
                           init_lora_weights=False)
    theirs = peft.get_peft_model(hf, lora)
    theirs.save_pretrained(tmp_path / "adapter")
    _, updates = read_updates(tmp_path / "adapter")
    assert [(u.layer, u.module) for u in updates] == [(0, "qkv"), (0, "fc"), (1, "qkv"), (1, "fc")]
    layers = theirs.base_model.model.transformer.h
    for update in updates:
        block = layers[update.layer]
        module = block.attn.c_attn if update.module == "qkv" else block.mlp.c_fc
        with torch.no_grad():
            # PEFT returns the delta in the Conv1D weight's (in, out) orientation
            theirs_delta = module.get_delta_weight("default").t().double().numpy()
        assert np.allclose(update.dense(), theirs_delta, atol=1e-6)
    # amplification reads W from the HF checkpoint with the same orientation
    ours = from_pretrained(tmp_path / "base")
    load_adapter(ours, tmp_path / "adapter")
    report_path = tmp_path / "report.json"
    assert main([str(tmp_path / "adapter"), "--base", str(tmp_path / "base"), "--json", str(report_path)]) == 0
    rows = json.loads(report_path.read_text())["matrices"]
    for row, update in zip(rows, updates, strict=True):
        block = ours.transformer.h[update.layer]
        W = (block.attn.c_attn if update.module == "qkv" else block.mlp.c_fc).weight.detach().double().numpy()
        U, s, Vh = np.linalg.svd(update.dense())
        expected = np.linalg.norm(s[:4]) / np.linalg.norm(U[:, :4].T @ W @ Vh[:4].T)
        assert row["amplification"]["factor"] == pytest.approx(expected, rel=1e-6)


# --- the command ----------------------------------------------------------------------------


def short_training_run(tmp_path, rank: int = 4, steps: int = 5):
    """A small random GPT, its checkpoint, and an adapter trained a few steps on random tokens
    (nlg train's loop in miniature: AdamW on the LoRA parameters only)."""
    torch.manual_seed(0)
    base = GPT(tiny_config())
    base_file = save_base(base, tmp_path / "base")
    model = add_lora(base, rank=rank, alpha=32, targets=("q", "v"))
    optimizer = torch.optim.AdamW(lora_parameters(model).values(), lr=1e-2)
    tokens = torch.randint(0, 300, (4, 17), generator=torch.Generator().manual_seed(1))
    for _ in range(steps):
        logits = model(tokens[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    save_adapter(model, tmp_path / "adapter")
    return base_file, tmp_path / "adapter"


def test_command_on_a_trained_adapter_with_base(tmp_path, capsys):
    base, adapter = short_training_run(tmp_path)
    report_path = tmp_path / "out" / "report.json"
    code, out, err = run([adapter, "--base", base, "--json", report_path], capsys)
    assert code == 0, err
    assert "not fitted" in out and "amp" in out
    report = json.loads(report_path.read_text())
    rows = report["matrices"]
    assert [(r["layer"], r["module"]) for r in rows] == [(0, "q"), (0, "v"), (1, "q"), (1, "v")]
    # Independent check: the model loaded and merged the ordinary way, then a dense SVD.
    model = from_pretrained(base)  # shape inferred from the tensors
    W0 = {i: block.attn.c_attn.weight.detach().double().clone() for i, block in enumerate(model.transformer.h)}
    load_adapter(model, adapter)
    for module in lora_modules(model).values():
        module.merge()
    for row in rows:
        layer, part = row["layer"], "qv".index(row["module"]) * 2
        rows_slice = slice(part * 64, (part + 1) * 64)
        merged = model.transformer.h[layer].attn.c_attn.weight.detach().double()
        W = W0[layer][rows_slice].numpy()
        delta = (merged[rows_slice] - W0[layer][rows_slice]).numpy()
        U, s, Vh = np.linalg.svd(delta)
        assert row["numerical_rank"] == 4 and row["power_law"] is None
        assert np.allclose(row["singular_values"], s[:4], rtol=1e-4)
        assert row["frobenius"] == pytest.approx(np.linalg.norm(delta), rel=1e-4)
        assert row["spectral"] == pytest.approx(s[0], rel=1e-4)
        assert row["stable_rank"] == pytest.approx(np.sum(s**2) / s[0] ** 2, rel=1e-4)
        amp = row["amplification"]
        projection = np.linalg.norm(U[:, :4].T @ W @ Vh[:4].T)
        assert amp["projection"] == pytest.approx(projection, rel=1e-3)
        assert amp["factor"] == pytest.approx(np.linalg.norm(delta) / projection, rel=1e-3)
        assert amp["weight_frobenius"] == pytest.approx(np.linalg.norm(W))
        assert amp["top_projection"] == pytest.approx(np.linalg.norm(np.linalg.svd(W)[1][:4]))
        assert amp["random_projection"] < amp["top_projection"]


def test_power_law_is_fitted_when_the_rank_allows(tmp_path, capsys):
    save_adapter(trained_like(add_lora(GPT(tiny_config()), rank=12, alpha=12, targets=("o",))), tmp_path)
    code, _, _ = run([tmp_path, "--json", tmp_path / "r.json", "--min_evals", "10"], capsys)
    assert code == 0
    for row in json.loads((tmp_path / "r.json").read_text())["matrices"]:
        evals = np.array(row["singular_values"]) ** 2
        assert row["power_law"]["alpha"] == pytest.approx(fit_power_law(evals).alpha)
    code, _, _ = run([tmp_path, "--json", tmp_path / "r.json", "--min_evals", "13"], capsys)
    row = json.loads((tmp_path / "r.json").read_text())["matrices"][0]
    assert row["power_law"] is None and "12 nonzero eigenvalues < min_evals 13" in row["power_law_note"]


def planted_adapter(directory, directions: np.ndarray, sigma: np.ndarray, left: np.ndarray) -> None:
    """An o-adapter whose ΔW in every layer is left · diag(sigma) · directionsᵀ exactly."""
    rank = len(sigma)
    model = add_lora(GPT(tiny_config()), rank=rank, alpha=float(rank), targets=("o",))  # scaling 1
    with torch.no_grad():
        for module in lora_modules(model).values():
            module.lora_A["o"].copy_(torch.from_numpy(directions.T))
            module.lora_B["o"].copy_(torch.from_numpy(left * sigma))
    save_adapter(model, directory)


def test_compare_shared_nested_and_orthogonal_subspaces(tmp_path, capsys):
    V, U = orthonormal(64, 20, 1), orthonormal(64, 20, 2)
    planted_adapter(tmp_path / "r4", V[:, :4], np.array([4.0, 3.0, 2.0, 1.0]), U[:, :4])
    # rank 8 whose top 4 right singular vectors are r4's: φ(4, 4) = 1 at ranks 4 vs 8
    planted_adapter(tmp_path / "r8", V[:, :8], np.array([9, 8, 7, 6, 0.4, 0.3, 0.2, 0.1]), U[:, :8])
    planted_adapter(tmp_path / "orth", V[:, 8:12], np.array([4.0, 3.0, 2.0, 1.0]), U[:, 8:12])
    for other, expected in (("r8", 1.0), ("orth", 0.0), ("r4", 1.0)):
        code, out, err = run([tmp_path / "r4", "--compare", tmp_path / other, "--json", tmp_path / "c.json"], capsys)
        assert code == 0, err
        rows = json.loads((tmp_path / "c.json").read_text())["matrices"]
        for row in rows:
            assert row["similarity"]["phi"] == pytest.approx(expected, abs=1e-9)
            assert row["similarity"]["i"] == 4
    grid = np.array(rows[0]["similarity"]["grid"])
    assert grid.shape == (4, 4) and np.allclose(np.diag(grid), 1.0)
    code, _, _ = run([tmp_path / "r8", "--compare", tmp_path / "r4", "--json", tmp_path / "c.json"], capsys)
    sim = json.loads((tmp_path / "c.json").read_text())["matrices"][0]["similarity"]
    assert np.array(sim["grid"]).shape == (8, 4) and sim["phi"] == pytest.approx(1.0)
    # the paper's choice, right singular vectors of A, on identical adapters
    code, out, _ = run([tmp_path / "r8", "--compare", tmp_path / "r8", "--subspace", "A"], capsys)
    assert code == 0 and "A's right singular vectors" in out


def test_compare_reports_unmatched_matrices(tmp_path, capsys):
    save_adapter(trained_like(add_lora(GPT(tiny_config()), rank=4, targets=("q", "v"))), tmp_path / "a")
    save_adapter(trained_like(add_lora(GPT(tiny_config()), rank=8, targets=("q", "o"))), tmp_path / "b")
    code, out, _ = run([tmp_path / "a", "--compare", tmp_path / "b", "--json", tmp_path / "c.json"], capsys)
    assert code == 0
    report = json.loads((tmp_path / "c.json").read_text())
    assert report["compare"]["only_in_adapter"] == ["0.v", "1.v"]
    assert report["compare"]["only_in_compare"] == ["0.o", "1.o"]
    assert "only in compare: 0.o, 1.o" in out


def test_untrained_adapter_is_flagged(tmp_path, capsys):
    save_adapter(add_lora(GPT(tiny_config()), rank=4, targets=("q",)), tmp_path)  # B = 0
    code, out, _ = run([tmp_path, "--compare", tmp_path], capsys)
    assert code == 0 and "zero update" in out


def test_plot_is_written(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    base, adapter = short_training_run(tmp_path, steps=2)
    code, out, err = run([adapter, "--base", base, "--compare", adapter, "--plot", tmp_path / "p" / "a.png"], capsys)
    assert code == 0, err
    assert (tmp_path / "p" / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in (tmp_path / "p").iterdir() if p.name != "a.png"]  # no temporary left


def test_plot_without_matplotlib_says_how_to_install(tmp_path, capsys, monkeypatch):
    save_adapter(trained_like(add_lora(GPT(tiny_config()), rank=4)), tmp_path)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    code, out, err = run([tmp_path, "--plot", tmp_path / "a.png"], capsys)
    assert code == 2 and "pip install 'nlg[plot]'" in err and out == ""


def test_through_the_nlg_command(tmp_path, capsys):
    from nlg.cli import main as nlg

    save_adapter(trained_like(add_lora(GPT(tiny_config()), rank=4)), tmp_path)
    assert nlg(["analyze", str(tmp_path), "--top", "2"]) == 0
    assert "s2" in capsys.readouterr().out


# --- bad input ------------------------------------------------------------------------------


def test_directory_without_an_adapter(tmp_path, capsys):
    code, _, err = run([tmp_path], capsys)
    assert code == 2 and str(tmp_path) in err and "not an adapter directory" in err
    for step in (5, 40, 300):  # nlg train's work dir: point at its newest checkpoint
        save_adapter(add_lora(GPT(tiny_config()), rank=2), tmp_path / f"checkpoint-{step}")
    code, _, err = run([tmp_path], capsys)
    assert code == 2 and f"the latest checkpoint there is {tmp_path / 'checkpoint-300'}" in err


def test_adapter_that_does_not_fit_the_base(tmp_path, capsys):
    save_adapter(trained_like(add_lora(GPT(tiny_config()), rank=4)), tmp_path / "adapter")
    wide = save_base(GPT(tiny_config(n_embd=128)), tmp_path / "wide")
    code, _, err = run([tmp_path / "adapter", "--base", wide], capsys)
    assert code == 2 and str(tmp_path / "adapter") in err
    assert "transformer.h.0.attn.c_attn.lora_A.weight" in err and "(64, 64)" in err
    code, _, err = run([tmp_path / "adapter", "--model_card", "gpt2.tiny"], capsys)
    assert code == 2 and "card gpt2.tiny" in err and "lora_A.weight" in err
    code, _, err = run([tmp_path / "adapter", "--base", tmp_path / "missing.bin"], capsys)
    assert code == 2 and "missing.bin" in err


def test_compare_with_another_model_size(tmp_path, capsys):
    save_adapter(trained_like(add_lora(GPT(tiny_config()), rank=4)), tmp_path / "a")
    wide = GPT(tiny_config(n_embd=128))
    save_adapter(trained_like(add_lora(wide, rank=4)), tmp_path / "b")
    code, _, err = run([tmp_path / "a", "--compare", tmp_path / "b"], capsys)
    assert code == 2 and "lora_A.weight" in err and str(tmp_path / "b") in err


def test_broken_tensors_are_named(tmp_path, capsys):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    save_adapter(trained_like(add_lora(GPT(tiny_config()), rank=4)), tmp_path)
    path = tmp_path / ADAPTER_WEIGHTS
    with safe_open(str(path), "pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(path)
    key = "base_model.model.transformer.h.1.attn.c_attn.lora_B.weight"
    tensors[key][0, 0] = float("nan")
    save_file(tensors, path, metadata=metadata)
    code, _, err = run([tmp_path], capsys)
    assert code == 2 and "transformer.h.1.attn.c_attn.lora_B.weight has 1 non-finite" in err
    tensors[key][0, 0] = 0.0
    tensors[key][70, 0] = 1.0  # a k row: the q and v slices cannot hold it
    save_file(tensors, path, metadata=metadata)
    code, _, err = run([tmp_path], capsys)
    assert code == 2 and "h.1.attn.c_attn.lora_B.weight is not zero outside" in err
    del tensors[key]
    save_file(tensors, path, metadata=metadata)
    code, _, err = run([tmp_path], capsys)
    assert code == 2 and "transformer.h.1.attn.c_attn.lora_B.weight is missing" in err


def test_update_dataclass_shapes():
    update = Update(layer=0, module="fc", A=np.ones((2, 5)), B=np.ones((7, 2)), scaling=3.0, tensor="t")
    assert update.rank == 2 and update.shape == (7, 5)
    assert np.allclose(update.dense(), 6.0)


def test_analyze_a_checkpoint_of_nlg_train(tmp_path, capsys):
    """The real thing: a few steps of `nlg train` on a tiny random model, then its checkpoint."""
    train = pytest.importorskip("nlg.train")
    from nlg.model import card_config

    torch.manual_seed(0)
    base = save_base(GPT(card_config("gpt2.tiny")), tmp_path / "base")
    rng = np.random.default_rng(0)
    with open(tmp_path / "train.jsonl", "w") as handle:
        for _ in range(8):
            context = rng.integers(0, 50000, 6).tolist() + [50256]
            completion = rng.integers(0, 50000, 4).tolist() + [50256]
            handle.write(json.dumps({"context": context, "completion": completion}) + "\n")
    code = run_main(train.main, ["--train_data", str(tmp_path / "train.jsonl"), "--model_card", "gpt2.tiny",
                                 "--init_checkpoint", str(base), "--max_step", "3",
                                 "--train_batch_size", "4", "--lr", "0.01", "--warmup_step", "0",
                                 "--lora_dropout", "0", "--work_dir", str(tmp_path / "run"), "--device", "cpu"])
    assert code == 0
    checkpoint = tmp_path / "run" / "checkpoint-3"
    capsys.readouterr()
    code, out, err = run([checkpoint, "--base", base, "--model_card", "gpt2.tiny",
                          "--json", tmp_path / "report.json"], capsys)
    assert code == 0, err
    rows = json.loads((tmp_path / "report.json").read_text())["matrices"]
    assert [(r["layer"], r["module"]) for r in rows] == [(0, "q"), (0, "v"), (1, "q"), (1, "v")]
    for row in rows:
        assert row["numerical_rank"] == 4 and row["frobenius"] > 0  # trained: B moved off zero
        assert row["amplification"]["factor"] == pytest.approx(
            row["frobenius"] / row["amplification"]["projection"])
