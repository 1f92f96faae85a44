"""Each dataset's recipe per fine-tuning method (Li & Liang's lr / epochs / batch for the
baselines, as the LoRA paper took them), `nlg recipe DATASET --method NAME`, the paper's baseline
rows, and the parameter table of `nlg recipe --params`."""

from __future__ import annotations

import pytest
from helpers import run_without_torch

from nlg import datasets, methods
from nlg.datasets.recipe import method_settings, setting_lines

# (dataset, method, adapter_dim) -> (lr, epochs, batch), Li & Liang's table as issue 20 lists it.
EXPECTED = {
    ("e2e", "full", None): (5e-5, 5, 10), ("webnlg", "full", None): (1e-5, 10, 6),
    ("dart", "full", None): (1e-5, 10, 6),
    ("e2e", "top2", None): (5e-5, 5, 10), ("webnlg", "top2", None): (5e-5, 10, 9),
    ("dart", "top2", None): (5e-5, 5, 5),
    ("e2e", "adapter-l", 224): (5e-5, 5, 5), ("webnlg", "adapter-l", 224): (5e-5, 5, 5),
    ("dart", "adapter-h", 112): (5e-5, 5, 5),
    ("e2e", "adapter-l", 6): (8e-5, 10, 5), ("webnlg", "adapter-l", 6): (5e-5, 10, 5),
    ("dart", "adapter-l", 8): (8e-5, 5, 5),
    ("e2e", "prefix", None): (8e-5, 5, 10), ("webnlg", "prefix", None): (5e-5, 5, 5),
    ("dart", "prefix", None): (5e-5, 10, 5), ("dart", "prefix-embed", None): (5e-5, 10, 5),
}


@pytest.mark.parametrize("key", list(EXPECTED))
def test_baseline_training_is_li_and_liangs(key) -> None:
    name, method, dim = key
    recipe = datasets.get(name).recipe
    train = recipe.method_train(method, {"adapter_dim": dim})
    assert (train.lr, train.max_epoch, train.train_batch_size) == EXPECTED[key]
    # Everything else is the dataset's LoRA recipe.
    assert (train.weight_decay, train.warmup_step, train.seq_len) == (
        recipe.train.weight_decay, recipe.train.warmup_step, recipe.train.seq_len)


def test_adapter_sizes_pick_the_papers_rows() -> None:
    assert [methods.get("adapter-l").recipe_key({"adapter_dim": r}) for r in (6, 8, 224, 248)] == [
        "adapter-0.1%", "adapter-0.1%", "adapter-3%", "adapter-3%"]
    assert methods.get("adapter-h").recipe_key({}) == "adapter-3%"  # its default r=112: the paper's 11M row


@pytest.mark.parametrize("method", ["lora", "full", "top2", "adapter-l", "adapter-h", "prefix", "prefix-embed"])
def test_method_settings_are_what_nlg_train_parses(method: str) -> None:
    """The pipeline passes every `nlg train` setting as its flag: no flag of another method,
    and the run gets the recipe's values and the method."""
    from nlg.training.settings import parse_args

    lines = method_settings(datasets.get("webnlg").recipe, method)
    flags = []
    for s in lines:
        if s.sets.startswith("nlg train --"):
            flags += [s.sets.removeprefix("nlg train "), s.value]
    config = parse_args(["--train_data", "x.jsonl", *flags])
    assert config.method == method
    names = [s.name for s in lines]
    assert ("LORA_DIM" in names) == (method == "lora")
    assert ("TOP_LAYERS" in names) == (method == "top2")
    assert ("ADAPTER_DIM" in names) == method.startswith("adapter")
    assert ("PREFIX_LEN" in names) == method.startswith("prefix")


@pytest.mark.parametrize(("name", "length"), [("e2e", "5"), ("webnlg", "5"), ("dart", "10")])
def test_prefix_recipes_carry_li_and_liangs_prefix_length(name: str, length: str) -> None:
    for method in ("prefix", "prefix-embed"):
        lines = {s.name: s for s in method_settings(datasets.get(name).recipe, method)}
        assert (lines["PREFIX_LEN"].value, lines["PREFIX_LEN"].sets) == (length, "nlg train --prefix_len")
        assert lines["METHOD"].value == method and "LORA_DROPOUT" not in lines


def test_nlg_recipe_prints_a_methods_settings_without_torch() -> None:
    code = ("from nlg.cli import main\nmain(['recipe', 'e2e', '--method', 'adapter-l', '--adapter_dim', '224'])\n"
            "print('--')\nmain(['recipe', 'e2e'])\nprint('--')\nmain(['recipe', '--params'])")
    method, plain, table = run_without_torch(code).split("--\n")
    lines = dict(line.split("=", 1) for line in method.splitlines())
    assert (lines["METHOD"], lines["ADAPTER_DIM"], lines["LR"], lines["EPOCHS"], lines["BATCH"]) == (
        "adapter-l", "224", "5e-05", "5", "5")
    assert "LORA_DIM" not in lines and lines["BEAM"] == "10"  # decoding is LoRA's for every row
    # Without --method: LoRA's lines, as before.
    assert plain.splitlines() == [f"{s.name}={s.value}" for s in setting_lines(datasets.get("e2e").recipe)]
    rows = {tuple(line.split()[:3]): line for line in table.splitlines()[1:]}
    assert "25,194,496" in rows[("top2", "top_layers=2", "gpt2.md")]
    assert rows[("adapter-l", "adapter_dim=224", "gpt2.md")].split()[3:] == ["11,089,152", "11.09M", "11.09M", "(same)"]
    lora_md = next(line for line in table.splitlines() if line.startswith("lora") and "gpt2.md" in line)
    assert "393,216" in lora_md and "0.35M" in lora_md and "microsoft/LoRA#148" in lora_md
    assert rows[("prefix", "prefix_len=5", "gpt2.md")].split()[3:6] == ["25,744,896", "25.74M", "0.35M"]
    assert "245,760" in rows[("prefix", "prefix_len=5", "gpt2.md")]


@pytest.mark.parametrize("argv, message", [
    (["e2e", "--method", "full", "--adapter_dim", "4"],
     "--adapter_dim is a setting of --method adapter-l/adapter-h, not of --method full"),
    (["e2e", "--method", "adapter-l", "--adapter_dim", "0"], "--adapter_dim must be >= 1"),
    (["e2e", "--method", "prefix", "--adapter_dim", "8"],
     "--adapter_dim is a setting of --method adapter-l/adapter-h, not of --method prefix"),
    (["e2e", "--method", "prefix-x"], "--method prefix-x: unknown method; choose one of lora, full"),
])
def test_nlg_recipe_refuses_bad_methods_in_one_line(argv, message, capsys) -> None:
    from nlg.cli import main

    assert main(["recipe", *argv]) == 2
    out = capsys.readouterr()
    assert out.out == "" and out.err.count("\n") == 1 and message in out.err


def test_the_papers_baseline_rows() -> None:
    e2e = datasets.get("e2e").recipe
    h = e2e.paper_result("gpt2.md", method="adapter-h")
    assert (h.params, h.scores["BLEU"], h.spread["NIST"], h.copied) == ("11.09M", 67.3, 0.07, False)
    small = e2e.paper_result("gpt2.md", method="adapter-l", params="0.37M")
    assert (small.scores["CIDEr"], small.copied) == (2.40, True)
    assert e2e.paper_result("gpt2.lg", method="full").params == "774.03M"
    webnlg = datasets.get("webnlg").recipe
    top = webnlg.paper_result("gpt2.md", "unseen", method="top2")
    assert (top.scores["BLEU"], top.scores["TER"]) == (18.9, 0.99)
    assert webnlg.paper_result("gpt2.lg", "all", "adapter-l", "23M").scores["BLEU"] == 57.7
    dart = datasets.get("dart").recipe
    assert dart.paper_result("gpt2.md", method="top2").scores == {"BLEU": 41.0, "METEOR": 0.34, "TER": 0.56}
    counts = {name: sum(not r.external for r in datasets.get(name).recipe.paper) for name in ("e2e", "webnlg", "dart")}
    assert counts == {"e2e": 12, "webnlg": 6 + 9 * 3, "dart": 2 + 9}
    # Rows other papers published carry their source, and come after the LoRA paper's own.
    vera = e2e.paper_result("gpt2.md", method="vera")
    assert (vera.external, vera.scores["BLEU"], vera.params) == (True, 70.1, "0.098M") and "VeRA" in vera.source
    assert [r.external for r in e2e.paper] == sorted(r.external for r in e2e.paper)
    prefix = e2e.paper_result("gpt2.lg", method="prefix")
    assert (prefix.params, prefix.scores["BLEU"], prefix.scores["CIDEr"], prefix.copied) == ("0.77M", 70.3, 2.47, True)
    assert webnlg.paper_result("gpt2.md", "unseen", "prefix").scores == {"BLEU": 45.6, "METEOR": 0.38, "TER": 0.49}
    assert dart.paper_result("gpt2.lg", method="prefix").scores == {"BLEU": 46.7, "METEOR": 0.38, "TER": 0.45}
    # LoRA's rows still come first, so paper_result's default finds them.
    assert e2e.paper_result("gpt2.md").scores["BLEU"] == 70.4


@pytest.mark.parametrize("method, sizes, expect", [
    ("adapter-l", {"adapter_dim": 224}, {"LR": "5e-05", "EPOCHS": "5", "ADAPTER_DIM": "224"}),  # the r=224 (3 %) row
    ("adapter-l", {"adapter_dim": 6}, {"LR": "8e-05", "EPOCHS": "10", "ADAPTER_DIM": "6"}),
    ("adapter-l", {}, {"LR": "8e-05", "ADAPTER_DIM": "6"}),
    ("top2", {"top_layers": 3}, {"TOP_LAYERS": "3", "METHOD": "top2"}),
    ("prefix", {"prefix_len": 7}, {"PREFIX_LEN": "7"}),
    ("prefix", {}, {"PREFIX_LEN": "5"}),
])
def test_every_size_reaches_the_recipe(method, sizes, expect) -> None:
    """Issue 29 case 1: the pipeline's settings (recipe.settings, called in-process) follow the size."""
    from nlg.datasets import recipe

    values = recipe.settings("e2e", method, sizes)
    assert {key: values[key] for key in expect} == expect
    assert "LORA_DIM" not in values


def test_nlg_recipe_takes_every_size_flag(capsys) -> None:
    from nlg.cli import main

    assert main(["recipe", "e2e", "--method", "adapter-l", "--adapter_dim", "224"]) == 0
    out = capsys.readouterr().out
    assert "LR=5e-05" in out and "EPOCHS=5" in out and "ADAPTER_DIM=224" in out
    assert main(["recipe", "dart", "--method", "prefix", "--prefix_len", "3"]) == 0
    assert "PREFIX_LEN=3" in capsys.readouterr().out
    assert main(["recipe", "e2e", "--method", "top2", "--top_layers", "0"]) == 2


def test_paper_rows_are_keyed_by_size() -> None:
    e2e = datasets.get("e2e").recipe
    assert e2e.paper_result("gpt2.md", method="adapter-l", sizes={"adapter_dim": 224}).params == "11.09M"
    assert e2e.paper_result("gpt2.md", method="adapter-l", sizes={"adapter_dim": 6}).params == "0.37M"
    assert e2e.paper_result("gpt2.md", method="adapter-l", sizes={"adapter_dim": 100}) is None
    assert e2e.paper_result("gpt2.md", method="top2", sizes={}).params == "25.19M"
    assert e2e.paper_result("gpt2.md", method="top2", sizes={"top_layers": 3}) is None
    webnlg = datasets.get("webnlg").recipe
    assert webnlg.paper_result("gpt2.md", method="adapter-l", sizes={"adapter_dim": 224}).params == "11M"
    dart = datasets.get("dart").recipe
    assert dart.paper_result("gpt2.md", method="prefix", sizes={"prefix_len": 10}) is not None


def test_params_table_has_a_prefix_embed_row() -> None:
    from nlg.methods.counts import count_table

    row = next(line for line in count_table().splitlines() if line.startswith("prefix-embed"))
    assert "5,120" in row and "no GPT-2 row" in row
