"""nlg.datasets: the registry and each dataset's recipe, checked against the stages that will run it."""

import subprocess
import sys

import pytest
from helpers import run_without_torch

from nlg import datasets
from nlg.datasets.recipe import ScoringRecipe

NAMES = ("e2e", "webnlg", "dart")


def test_registry():
    assert datasets.names() == NAMES
    assert [datasets.get(name).name for name in NAMES] == list(NAMES)
    assert [datasets.get(name).raw_env for name in NAMES] == ["E2E_RAW_DIR", "WEBNLG_RAW_DIR", "DART_RAW_DIR"]
    with pytest.raises(ValueError, match=r"unknown dataset 'e2e_nlg' \(known: e2e, webnlg, dart\)"):
        datasets.get("e2e_nlg")


@pytest.mark.parametrize("name", NAMES)
def test_train_recipe_is_what_nlg_train_parses(name):
    from nlg.training.settings import parse_args

    recipe = datasets.get(name).recipe.train
    config = parse_args(["--train_data", "x.jsonl", *recipe.args()])
    for field, value in vars(recipe).items():
        assert config.to_json()[field] == (list(value) if isinstance(value, tuple) else value), field


def test_train_recipes_are_the_papers():
    e2e, webnlg, dart = (datasets.get(name).recipe.train for name in NAMES)
    assert e2e == webnlg
    assert (e2e.lr, e2e.weight_decay, e2e.train_batch_size, e2e.max_epoch, e2e.warmup_step, e2e.label_smooth) == (
        2e-4, 0.01, 8, 5, 500, 0.1)
    assert (e2e.lora_dim, e2e.lora_alpha, e2e.lora_dropout, e2e.lora_targets, e2e.seq_len) == (4, 32, 0.1, ("q", "v"), 512)
    # DART: no weight decay, no dropout, no label smoothing; the rest as E2E.
    assert (dart.weight_decay, dart.lora_dropout, dart.label_smooth) == (0.0, 0.0, 0.0)
    assert dart.lr == e2e.lr and dart.max_epoch == e2e.max_epoch


@pytest.mark.parametrize("name", NAMES)
def test_beam_recipe_is_what_nlg_beam_parses(name):
    from nlg.beam import parse_args

    recipe = datasets.get(name).recipe.beam
    args = parse_args(["--data", "x.jsonl", *recipe.args()])
    assert args.eos_token_id == [recipe.eos_token_id] == [628]
    for field in ("beam", "length_penalty", "no_repeat_ngram_size", "repetition_penalty", "eval_len", "seq_len"):
        assert getattr(args, field) == getattr(recipe, field), field
    assert (recipe.beam, recipe.length_penalty, recipe.no_repeat_ngram_size, recipe.eval_len) == (10, 0.8, 4, 64)


def test_scoring_recipes_give_the_papers_decode_flags():
    e2e, webnlg, dart = (datasets.get(name).recipe.scoring for name in NAMES)
    assert e2e.decode_args() == ["--ref_type", "e2e"] and e2e.suite == "e2e" and e2e.pymteval
    assert webnlg.decode_args("unseen") == ["--ref_type", "webnlg", "--ref_num", "6", "--filter", "unseen",
                                            "--tokenize", "--lower"]
    assert dart.decode_args() == ["--ref_type", "dart", "--ref_num", "6", "--tokenize", "--lower"]
    assert webnlg.suite == dart.suite == "webnlg" and webnlg.metrics == ("BLEU", "METEOR", "TER")
    with pytest.raises(ValueError, match="no 'seen' scores"):
        dart.decode_args("seen")
    with pytest.raises(ValueError, match="subsets must be among"):
        ScoringRecipe("dart", 6, True, True, ("everything",), "webnlg", ("BLEU",))


def test_paper_results():
    e2e, webnlg, dart = (datasets.get(name).recipe for name in NAMES)
    medium, large = e2e.paper_result("gpt2.md"), e2e.paper_result("gpt2.lg")
    assert medium.scores == {"BLEU": 70.4, "NIST": 8.85, "METEOR": 46.8, "ROUGE_L": 71.8, "CIDEr": 2.53}
    assert large.scores == {"BLEU": 70.4, "NIST": 8.89, "METEOR": 46.8, "ROUGE_L": 72.0, "CIDEr": 2.47}
    assert medium.fraction("BLEU") == pytest.approx(0.704) and medium.fraction("NIST") == 8.85
    assert [(r.subset, r.scores["BLEU"]) for r in webnlg.paper if r.model_card == "gpt2.md" and r.method == "lora"] == [
        ("unseen", 46.7), ("seen", 62.1), ("all", 55.3)]
    assert webnlg.paper_result("gpt2.lg", "all").scores == {"BLEU": 57.0, "METEOR": 0.42, "TER": 0.38}
    assert webnlg.paper_result("gpt2.lg", "seen").fraction("METEOR") == 0.45
    assert dart.paper_result("gpt2.md").scores == {"BLEU": 47.1, "METEOR": 0.39, "TER": 0.46}
    assert dart.paper_result("gpt2.lg", "seen") is None and e2e.paper_result("gpt2.sm") is None
    for recipe in (e2e, webnlg, dart):  # every reported subset is one the recipe decodes
        assert {r.subset for r in recipe.paper} == set(recipe.scoring.subsets)


def test_data_and_decode_never_import_torch():
    """They are part of the scoring-only install."""
    run_without_torch("import nlg.data, nlg.decode, nlg.pairs\n"
                      "from nlg import datasets\n"
                      "[datasets.get(n) for n in datasets.names()]\n")


def test_score_args_are_the_papers_scoring_commands():
    e2e, webnlg, dart = (datasets.get(name).recipe.scoring for name in NAMES)
    assert e2e.score_args() == ["--dataset", "e2e", "-p"]
    assert webnlg.score_args() == ["--dataset", "webnlg", "-nr", "6", "-m", "bleu,meteor,ter"]
    assert dart.score_args() == ["--dataset", "dart", "-nr", "6", "-m", "bleu,meteor,ter"]


def test_settings_name_every_train_and_beam_field_once():
    from dataclasses import fields

    from nlg.datasets.recipe import BEAM_SETTINGS, TRAIN_SETTINGS, BeamRecipe, TrainRecipe

    assert sorted(TRAIN_SETTINGS.values()) == sorted(f.name for f in fields(TrainRecipe))
    assert sorted(BEAM_SETTINGS.values()) == sorted(f.name for f in fields(BeamRecipe))
    assert not set(TRAIN_SETTINGS) & set(BEAM_SETTINGS)


def test_settings_are_the_recipes_values():
    from nlg.datasets.recipe import setting_lines

    values = {s.name: s.value for s in setting_lines(datasets.get("dart").recipe)}
    assert (values["WEIGHT_DECAY"], values["LORA_DROPOUT"], values["LABEL_SMOOTH"]) == ("0.0", "0.0", "0.0")
    assert (values["LR"], values["LORA_TARGETS"], values["EOS_IDS"], values["EVAL_LEN"]) == ("0.0002", "q,v", "628", "64")
    assert (values["SUBSETS"], values["SCORE_ARGS"]) == ("all", "--dataset dart -nr 6 -m bleu,meteor,ter")
    assert values["DECODE_ARGS"] == "--ref_type dart --ref_num 6 --tokenize --lower"
    webnlg = {s.name: s.value for s in setting_lines(datasets.get("webnlg").recipe)}
    assert webnlg["SUBSETS"] == "all seen unseen" and webnlg["WEIGHT_DECAY"] == "0.01"
    for name in NAMES:
        assert all("\n" not in s.value and s.sets.startswith("nlg ") for s in setting_lines(datasets.get(name).recipe))


def test_describe_gives_the_shared_value_and_the_exceptions():
    from nlg.datasets.recipe import describe

    assert describe({"e2e": "8", "webnlg": "8", "dart": "8"}) == "8"
    assert describe({"e2e": "0.1", "webnlg": "0.1", "dart": "0.0"}) == "0.1 (dart: 0.0)"
    assert describe({"e2e": "a", "webnlg": "b", "dart": "c"}) == "e2e: a | webnlg: b | dart: c"


def test_nlg_recipe_prints_settings_without_torch():
    lines = run_without_torch("from nlg.cli import main\nmain(['recipe', 'webnlg']); main(['recipe'])").splitlines()
    shell = dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith(" "))
    assert shell["SUBSETS"] == "all seen unseen" and shell["BATCH"] == "8" and shell["BEAM"] == "10"
    table = [line for line in lines if line.startswith("  ")]
    assert "  LABEL_SMOOTH        nlg train --label_smooth           0.1 (dart: 0.0)" in table
    assert len(table) == len(shell)
    bad = subprocess.run([sys.executable, "-m", "nlg", "recipe", "wikibio"], capture_output=True, text=True)
    assert bad.returncode == 2 and "invalid choice: 'wikibio'" in bad.stderr
