"""The pipeline script end to end, shrunk: scripts/reproduce.sh --demo on E2E, WebNLG and DART,
and its helpers (nlg.pipeline: numeric settings checked, run.json).

E2E runs every stage: data -> pretrain (full fine-tune of a random tiny GPT-2) -> LoRA train ->
select -> beam -> untrained -> decode -> score, then is re-run with changed settings (refused,
naming them) and mistyped numbers (refused before any work). WebNLG selects its checkpoint by a
validation beam search (and never reads the test split for it); DART runs two seeds, one of them
resumed. WebNLG and DART start from E2E's pre-trained model (INIT_CHECKPOINT skips the demo's
pretrain stage) and score without METEOR (cutting its paraphrase table for new references takes
longer than the rest of a toy run), so the three share the costly part.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nlg.pipeline import check, spread_contexts

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "reproduce.sh"
DATASETS = ("e2e", "webnlg", "dart")
STAGES = ("data", "pretrain", "train", "select", "beam", "untrained", "decode", "score")

# Every stage at toy size: a few steps, six test contexts, beam 2 over 12 tokens.
# Validation is left out: a pass over a whole valid split costs more than the rest of a toy run.
# Without a validation split the last checkpoint is decoded (SELECT=last); NPROC=1 saves the
# script asking torch for GPUs.
TOY = {"MAX_STEP": "10", "BATCH": "8", "WARMUP": "5", "SAVE_INTERVAL": "5", "VALID_SPLIT": "",
       "TEST_LIMIT": "6", "BEAM": "2", "EVAL_LEN": "12", "BEAM_BATCH": "4", "NPROC": "1"}
NO_METEOR = "-nr 6 -m bleu,ter"


def run_script(*args: str, env: dict[str, str] | None = None, timeout: int = 900):
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


@pytest.fixture(scope="module")
def toy_env(shared_dir, vocab_dir, e2e_raw_dir, webnlg_xml_dir, dart_raw_dir):
    """toy_env(work, **settings): the environment of a toy run in `work` (raw files and the
    vocabulary from the shared folder), with `settings` on top."""
    common = {
        **os.environ,
        # the script calls `python`: make it this interpreter
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "NLG": f"{sys.executable} -m nlg",
        "OMP_NUM_THREADS": "1",
        "NLG_VOCAB_DIR": str(vocab_dir),
        "E2E_RAW_DIR": str(e2e_raw_dir),
        "WEBNLG_RAW_DIR": str(webnlg_xml_dir),
        "DART_RAW_DIR": str(dart_raw_dir),
        **TOY,
    }

    def env(work: Path, **settings: str) -> dict[str, str]:
        return {**common, "WORK_DIR": str(work / "run"), "DATA_DIR": str(work / "data"), **settings}

    return env


def pretrained(e2e_demo) -> str:
    """The E2E demo's pre-trained tiny GPT-2, for the other datasets' runs to start from."""
    checkpoints = (e2e_demo[0] / "pretrain").glob("checkpoint-*")
    return str(max(checkpoints, key=lambda path: int(path.name.split("-")[1])))


def recipe_names(dataset: str) -> list[str]:
    result = subprocess.run([sys.executable, "-m", "nlg", "recipe", dataset], capture_output=True, text=True,
                            check=True, cwd=REPO)
    return [line.split("=", 1)[0] for line in result.stdout.splitlines()]


def stages_run(stderr: str) -> list[str]:
    """The stages a run announced (`== STAGE...` lines), in order."""
    return [match.group(1) for match in re.finditer(r"^== (\w+)", stderr, re.MULTILINE)]


# ---------------------------------------------------------------------------------------------
# Options and settings
# ---------------------------------------------------------------------------------------------


def test_help_documents_every_setting():
    from nlg import methods
    from nlg.pipeline.settings import ENVIRONMENT, NUMBERS, resolve
    from nlg.pipeline.stages import STAGES

    result = run_script("--help")
    assert result.returncode == 0
    # every environment setting the script (${NAME:-...}) and nlg reproduce read is in --help,
    # and so is every method's (its flags upper-cased)
    settings = set(re.findall(r"\$\{([A-Z_0-9]+):?-", SCRIPT.read_text())) | set(ENVIRONMENT) | set(NUMBERS)
    settings |= {flag.upper() for name in methods.names() for flag in methods.get(name).flags}
    missing = sorted(name for name in settings
                     if not re.search(rf"\b{name}=|^  {name} +nlg ", result.stdout, re.MULTILINE))
    assert not missing, f"undocumented settings: {missing}"
    for dataset in DATASETS:
        names = recipe_names(dataset)
        # the recipe's settings, with their values, are in --help, and the pipeline records each
        assert [name for name in names if not re.search(rf"^  {name} +nlg ", result.stdout, re.MULTILINE)] == []
        resolved = resolve(dataset, {"NPROC": "1"}, demo=True)
        recorded = {name for stage in STAGES for name in stage.names(resolved)} | {"SELECT_METRIC"}
        assert [name for name in names if name not in recorded or name not in resolved.values] == []
    assert re.search(r"^  WEIGHT_DECAY +nlg train --weight_decay +0\.01 \(dart: 0\.0\)$", result.stdout, re.MULTILINE)


def test_bad_arguments_fail():
    assert run_script("--bogus").returncode == 2
    missing = run_script()
    assert missing.returncode == 2 and "which dataset?" in missing.stderr
    unknown = run_script("wikibio")
    assert unknown.returncode == 2 and "unknown dataset 'wikibio'" in unknown.stderr
    result = run_script("webnlg", "--from", "nowhere", env={**os.environ, "WORK_DIR": "/tmp/nlg-nowhere"})
    assert result.returncode == 2 and "unknown stage 'nowhere'" in result.stderr


@pytest.mark.parametrize("pair, problem", [
    ("MAX_STEP=3x", "MAX_STEP='3x' is not a whole number >= 0"),
    ("TEST_LIMIT=-1", "TEST_LIMIT='-1' is not a whole number >= 0"),
    ("BATCH=0", "BATCH='0' is not a whole number >= 1"),
    ("LR=0", "LR='0' is not a number > 0"),
    ("LR=nan", "LR='nan' is not a number > 0"),
    ("LORA_DROPOUT=1", "LORA_DROPOUT='1' is not a number >= 0 and < 1"),
    ("EOS_IDS=628 x", "EOS_IDS='628 x' is not whole numbers >= 0"),
    ("SEEDS=110 111", None), ("TOP_LAYERS=", None), ("LR=2e-4", None), ("ADAM_BETA2=0.999", None),
])
def test_numeric_settings_are_checked(pair, problem):
    assert check([pair]) == ([problem] if problem else [])


def test_subset_of_a_split_refuses_files_that_do_not_pair(tmp_path):
    from nlg.files import InputError
    from nlg.pipeline import write_subset

    encoded, formatted = tmp_path / "test.jsonl", tmp_path / "test_formatted.jsonl"
    encoded.write_text('{"context": [1], "completion": [2]}\n' * 3)
    formatted.write_text('{"context": "a", "completion": "x"}\n' * 2)
    out = [tmp_path / "sub.jsonl", tmp_path / "sub_formatted.jsonl"]
    with pytest.raises(InputError) as error:
        write_subset(encoded, formatted, 1, *out)
    assert str(error.value) == (f"{encoded} has 3 lines, {formatted} 2; they are one split's two files, "
                                "line for line (rerun `nlg data`)")
    formatted.write_text('{"context": "a", "completion": "x"}\n' * 2 + '{"completion": "y"}\n')
    with pytest.raises(InputError, match=f'{re.escape(str(formatted))}:3: no "context" string'):
        write_subset(encoded, formatted, 1, *out)
    assert not any(path.exists() for path in out)
    formatted.write_text('{"context": "a", "completion": "x"}\n' + '{"context": "b", "completion": "y"}\n' * 2)
    assert write_subset(encoded, formatted, 1, *out) == 1
    assert out[1].read_text() == '{"context": "a", "completion": "x"}\n'
    assert out[0].read_text() == '{"context": [1], "completion": [2]}\n'


def test_subset_keeps_contexts_spread_over_the_split():
    contexts = ["a", "a", "b", "c", "c", "c", "d", "e"]
    assert spread_contexts(contexts, 2) == [0, 1, 3, 4, 5]  # distinct 0 and 2 of a..e
    assert spread_contexts(contexts, 9) == list(range(8))


def test_method_settings_come_from_the_methods_recipe(tmp_path, toy_env):
    """--method NAME takes its settings from the method's recipe (in-process), checks them with
    the rest, and names the run directory after the method; the stages call `$NLG STAGE` (an
    `nlg` stand-in here, logging its calls, running `reproduce` and refusing every stage)."""
    log = tmp_path / "calls.txt"
    stub = tmp_path / "nlg"
    stub.write_text(f"""#!/bin/bash
echo "$*" >> {log}
if [ "$1" = reproduce ]; then
  exec {sys.executable} -m nlg "$@"
fi
exit 3
""")
    stub.chmod(0o755)
    env = {**toy_env(tmp_path), "NLG": str(stub)}
    del env["WORK_DIR"]
    bad = run_script("e2e", "--demo", "--method", "adapter-l", env={**env, "ADAPTER_DIM": "six"})
    assert bad.returncode == 2 and bad.stderr == "reproduce.sh: ADAPTER_DIM='six' is not a whole number >= 1; nothing was run\n"
    assert log.read_text() == "reproduce e2e --demo --method adapter-l\n"
    runs = REPO / "runs"
    made = [path for path in (runs, runs / "e2e-demo-adapter-l") if not path.exists()]
    try:
        good = run_script("e2e", "--demo", "--method=adapter-l", env={**env, "ADAPTER_DIM": "6"})
        assert good.returncode == 3  # the stand-in refuses `nlg data`: the run got that far
        assert log.read_text().splitlines()[-1].startswith("data e2e ")
        # a data stage that fails leaves no (empty) run directory behind (issue 26, new user)
        assert not (runs / "e2e-demo-adapter-l").exists()
    finally:
        for path in reversed(made):
            if path.is_dir():
                path.rmdir()
    both = run_script("e2e", "--method", "full", env={**env, "METHOD": "top2"})
    assert both.returncode == 2 and "--method full and METHOD=top2 disagree" in both.stderr
    lora = run_script("e2e", "--demo", env={**env, "TOP_LAYERS": "2"})
    assert lora.returncode == 2 and "settings of other methods than lora" in lora.stderr


# ---------------------------------------------------------------------------------------------
# E2E: every stage, a re-run that skips them, --from decode
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def e2e_demo(tmp_path_factory, toy_env, e2e_raw_dir):
    if not (e2e_raw_dir / "valid.txt").is_file():
        pytest.skip("shared E2E data missing")
    work = tmp_path_factory.mktemp("e2e")
    env = toy_env(work, PRETRAIN_STEPS="40", MAX_STEP="20", SEQ_LEN="96")
    result = run_script("e2e", "--demo", env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return work / "run", env, result


def test_e2e_demo_runs_every_stage_to_a_results_table(e2e_demo):
    run, _, result = e2e_demo
    assert stages_run(result.stderr) == ["data", *STAGES[1:6], "decode", "decode", "score", "score"]
    for stage in STAGES:
        assert (run / f".done-{stage}").is_file(), stage
    predictions = [json.loads(line) for line in (run / "predict.jsonl").read_text().splitlines()]
    assert len(predictions) == 6
    assert len((run / "e2e_pred.txt").read_text().splitlines()) == 6
    references = (run / "e2e_ref.txt").read_text().split("\n\n")
    assert len([block for block in references if block.strip()]) == 6
    scores = json.loads((run / "scores.json").read_text())
    assert {"BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr"} <= set(scores)
    assert isinstance(scores["BLEU"], float) and isinstance(scores["NIST"], float)
    results = json.loads((run / "results.json").read_text())
    assert results["model_card"] == "gpt2.tiny" and results["subsets"] == ["all"]
    # E2E's BLEU is on 0..1 in scores.json, in percent in the paper's table and in results
    assert results["this_run"]["all"]["BLEU"] == round(scores["BLEU"] * 100, 2)
    assert results["paper"]["gpt2.md"]["all"]["BLEU"] == 70.4
    table = (run / "results.md").read_text()
    assert table.startswith("| system | BLEU | NIST | METEOR | ROUGE_L | CIDEr |")
    # the demo scores the same card untrained beside it
    assert "| untrained gpt2.tiny |" in table and set(results["untrained"]["all"]) == set(scores) - {"scored"}
    # the stand-in pre-training learnt something
    pretrain = [json.loads(x) for x in (run / "pretrain" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in pretrain if "loss" in r]
    assert losses[-1] < losses[0] - 1.0
    assert (run / "lora" / "checkpoint-20" / "adapter_model.safetensors").is_file()
    # the newest checkpoints by step (40 after 5, 20 after 15), though the path has dashes in it
    assert "-" in str(run)
    config = json.loads((run / "lora" / "train_config.json").read_text())
    assert config["init_checkpoint"].endswith("pretrain/checkpoint-40")
    assert re.search(r"^== beam: .* checkpoint \S+/lora/checkpoint-20  ", result.stderr, re.MULTILINE)
    assert "SCORES:" in result.stdout
    # the run record: settings after overrides, the decoded checkpoint, no selection criterion
    record = json.loads((run / "run.json").read_text())
    assert (record["dataset"], record["model_card"], record["method"], record["seed"]) == ("e2e", "gpt2.tiny", "lora", 110)
    assert record["params"] == config["trainable_parameters"] and record["params"] > 0
    assert record["checkpoint"] == "lora/checkpoint-20" and record["selection"] is None
    assert record["settings"]["LR"] == "2e-3" and record["settings"]["TEST_LIMIT"] == "6"
    assert record["settings"]["SELECT"] == "last" and "DATA_DIR" not in record["settings"]
    assert record["subsets"] == {"all": {"scores": "scores.json", "references": "e2e_ref.txt",
                                         "predictions": "e2e_pred.txt"}}
    assert record["untrained"]["all"]["scores"] == "untrained/scores.json"
    # each stage's marker records what it was made from
    assert "LR=2e-3\n" in (run / ".done-train").read_text()
    assert "TEST_LIMIT=6\n" in (run / ".done-beam").read_text()
    assert re.search(r"^test\.jsonl=\d+ bytes, sha256 [0-9a-f]{64}$", (run / ".done-beam").read_text(), re.MULTILINE)


@pytest.mark.parametrize("method", ["full", "adapter-h", "prefix"])  # top2, adapter-l, prefix-embed: tests/methods
def test_every_method_runs_the_whole_chain(method, tmp_path, toy_env, e2e_demo):
    """`reproduce.sh e2e --demo --method NAME` at toy size, from the E2E demo's data and
    pre-trained model: the method's recipe trains (its own flags, its own run directory), its
    checkpoint is beam-searched through `nlg beam --checkpoint`, and run.json names the method
    and its trainable count."""
    run = tmp_path / "run"
    env = {**e2e_demo[1], "WORK_DIR": str(run), "INIT_CHECKPOINT": pretrained(e2e_demo)}
    result = run_script("e2e", "--demo", "--method", method, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    config = json.loads((run / method / "train_config.json").read_text())
    assert config["method"] == method and config["trainable_params"] > 0
    record = json.loads((run / "run.json").read_text())
    assert (record["method"], record["params"]) == (method, config["trainable_params"])
    assert record["checkpoint"] == f"{method}/checkpoint-20"
    assert json.loads((run / method / "checkpoint-20" / "method.json").read_text())["method"] == method
    assert len((run / "e2e_pred.txt").read_text().splitlines()) == 6
    assert isinstance(json.loads((run / "scores.json").read_text())["BLEU"], float)
    # its table: the run labelled by method and size, beside the paper's rows of every method
    label = {"full": "FT", "adapter-h": "AdapterH", "prefix": "PreLayer"}[method]
    table = (run / "results.md").read_text()
    assert re.search(rf"^\| gpt2\.tiny \| {label} [0-9.]+M \| n=1: 110 \|", table, re.MULTILINE), table
    assert "| GPT-2 M (paper) | LoRA 0.35M |" in table and "| GPT-2 M (paper) | AdapterH 11.09M |" in table


def test_e2e_rerun_skips_finished_stages_and_from_reruns(e2e_demo):
    run, env, _ = e2e_demo
    before = (run / "predict.jsonl").stat().st_mtime_ns
    again = run_script("e2e", "--demo", env=env)
    assert again.returncode == 0
    assert stages_run(again.stderr) == []
    assert (run / "predict.jsonl").stat().st_mtime_ns == before
    assert "| this run (gpt2.tiny) |" in again.stdout  # the finished run's table
    decode = run_script("e2e", "--demo", "--from", "decode", env=env)
    assert decode.returncode == 0, decode.stderr[-2000:]
    assert stages_run(decode.stderr) == ["decode", "decode", "score", "score"]
    assert (run / "predict.jsonl").stat().st_mtime_ns == before
    assert "SCORES:" in decode.stdout


def test_scripts_e2e_sh_is_reproduce_e2e(e2e_demo):
    run, env, _ = e2e_demo
    result = subprocess.run(["bash", str(REPO / "scripts" / "e2e.sh"), "--demo"], env=env, capture_output=True,
                            text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0 and stages_run(result.stderr) == []
    assert result.stdout == (run / "results.md").read_text()


def test_changed_settings_are_refused_naming_each_with_both_values(e2e_demo):
    """Issue 23 case 5: TEST_LIMIT=3 BEAM=4 LR=0.5 after a TEST_LIMIT=6 run printed the old
    table and rewrote the test subset. Now: one line, exit 2, nothing touched."""
    run, env, _ = e2e_demo
    outputs = [run / name for name in ("predict.jsonl", "test_subset_formatted.jsonl", "results.md", "run.json")]
    before = {path: path.stat().st_mtime_ns for path in outputs}
    changed = run_script("e2e", "--demo", env={**env, "TEST_LIMIT": "3", "BEAM": "4", "LR": "0.5"})
    assert changed.returncode == 2 and changed.stdout == ""
    assert changed.stderr == (f"reproduce.sh: {run}/.done-train was made with other settings: LR=2e-3 (now 0.5); "
                              "BEAM=2 (now 4); TEST_LIMIT=6 (now 3); redo it and every later stage with --from "
                              "train, or use another WORK_DIR\n")
    # --from a later stage keeps the earlier ones, so they must fit: beam is named, nothing removed
    later = run_script("e2e", "--demo", "--from", "decode", env={**env, "TEST_LIMIT": "3"})
    assert later.returncode == 2 and "--from beam" in later.stderr and "TEST_LIMIT=6 (now 3)" in later.stderr
    assert {path: path.stat().st_mtime_ns for path in outputs} == before
    # a marker from before settings were recorded is not trusted either
    marker = run / ".done-score"
    record = marker.read_text()
    marker.write_text("")
    try:
        old = run_script("e2e", "--demo", env=env)
    finally:
        marker.write_text(record)
    assert old.returncode == 2 and "no settings recorded" in old.stderr and "--from score" in old.stderr


@pytest.mark.parametrize("name, value, expected", [
    ("MAX_STEP", "3x", "MAX_STEP='3x' is not a whole number >= 0"),
    ("TEST_LIMIT", "2x", "TEST_LIMIT='2x' is not a whole number >= 0"),
    ("LR", "fast", "LR='fast' is not a number > 0"),
    ("SELECT", "best", "SELECT=best is not one of: last, valid_loss, valid_metric"),
])
def test_a_mistyped_setting_is_refused_before_any_work(tmp_path, toy_env, name, value, expected):
    result = run_script("e2e", "--demo", env=toy_env(tmp_path, **{name: value}))
    assert result.returncode == 2 and result.stderr.startswith(f"reproduce.sh: {expected}")
    assert len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "run").exists() and not (tmp_path / "data").exists()


def test_selection_settings_that_cannot_work_are_refused(tmp_path, toy_env):
    no_split = run_script("e2e", "--demo", env=toy_env(tmp_path, SELECT="valid_loss"))
    assert no_split.returncode == 2 and "SELECT=valid_loss needs a validation split" in no_split.stderr
    intervals = run_script("e2e", "--demo", env=toy_env(tmp_path, SELECT="valid_loss", VALID_SPLIT="valid",
                                                          EVAL_INTERVAL="4"))
    assert intervals.returncode == 2 and "EVAL_INTERVAL=4 must divide SAVE_INTERVAL=5" in intervals.stderr
    seeds = run_script("e2e", "--demo", "--seeds", "2", env=toy_env(tmp_path, SEEDS="1 2"))
    assert seeds.returncode == 2 and "not both" in seeds.stderr
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------
# WebNLG: the checkpoint chosen by a validation beam search; one test beam search, three
# decodes and scores; a run that fails at scoring, resumed
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def webnlg_demo(tmp_path_factory, toy_env, e2e_demo, webnlg_xml_dir):
    if not (webnlg_xml_dir / "test" / "testdata_with_lex.xml").is_file():
        pytest.skip("shared WebNLG data missing")
    work = tmp_path_factory.mktemp("webnlg")
    env = toy_env(work, INIT_CHECKPOINT=pretrained(e2e_demo), SCORE_ARGS=NO_METEOR,
                  SELECT="valid_metric", SELECT_SPLIT="valid", VALID_LIMIT="3")
    # scoring fails at the first candidate's validation scores, after its beam search
    failed = run_script("webnlg", "--demo", env={**env, "SCORE_ARGS": "--no-such-flag"})
    kept = (work / "run" / "select" / "checkpoint-5" / "predict.jsonl").stat().st_mtime_ns
    resumed = run_script("webnlg", "--demo", env=env)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    return work / "run", env, failed, resumed, kept


def test_webnlg_demo_beam_searches_once_and_scores_three_subsets(webnlg_demo):
    run, _, failed, _, _ = webnlg_demo
    # nlg score refused the flag: the run stopped there, every stage before it done
    assert failed.returncode == 2 and "--no-such-flag" in failed.stderr
    assert stages_run(failed.stderr) == ["data", "train", "select", "select"]
    assert not (run / "pretrain").exists()  # INIT_CHECKPOINT was given
    assert len((run / "predict.jsonl").read_text().splitlines()) == 6
    lines = {}
    for subset, suffix in (("all", ""), ("seen", "_seen"), ("unseen", "_unseen")):
        references = sorted((run / f"webnlg_ref{suffix}").iterdir())
        assert [path.name for path in references] == [f"reference{k}" for k in range(6)]
        lines[subset] = (run / f"webnlg_pred{suffix}.txt").read_text().splitlines()
        assert len(references[5].read_text().splitlines()) == len(lines[subset])
        assert (run / "untrained" / f"webnlg_pred{suffix}.txt").is_file()
    # TEST_LIMIT spreads its contexts over the test set: both category sets are there
    assert lines["seen"] and lines["unseen"]
    assert sorted(lines["seen"] + lines["unseen"]) == sorted(lines["all"])


def test_webnlg_selects_on_validation_and_keeps_candidates_searches(webnlg_demo):
    run, _, _, resumed, kept = webnlg_demo
    # the resumed run beam-searched the second candidate only: the first one's search was kept
    assert stages_run(resumed.stderr) == ["select", "select", "beam", "untrained", "decode", "decode",
                                          "score", "score"]
    assert "checkpoint-10 (beam 2)" in resumed.stderr and "checkpoint-5 (beam 2)" not in resumed.stderr
    assert (run / "select" / "checkpoint-5" / "predict.jsonl").stat().st_mtime_ns == kept
    values = {}
    for step in (5, 10):
        candidate = run / "select" / f"checkpoint-{step}"
        assert len((candidate / "predict.jsonl").read_text().splitlines()) == 3  # VALID_LIMIT contexts
        values[step] = json.loads((candidate / "scores.json").read_text())["BLEU"]
    selection = json.loads((run / "selection.json").read_text())
    chosen = max(values, key=lambda step: (values[step], -step))
    assert selection == {"criterion": "valid_metric", "metric": "BLEU", "chosen_step": chosen,
                         "checkpoint": str(run / "lora" / f"checkpoint-{chosen}"),
                         "candidates": [{"step": step, "value": values[step]} for step in (5, 10)]}
    assert re.search(rf"^== beam: .* checkpoint \S+/lora/checkpoint-{chosen}  \[", resumed.stderr, re.MULTILINE)
    record = json.loads((run / "run.json").read_text())
    assert record["checkpoint"] == f"lora/checkpoint-{chosen}"
    assert record["selection"] == {key: selection[key] for key in ("criterion", "metric", "chosen_step", "candidates")}
    assert set(record["subsets"]) == {"all", "seen", "unseen"}
    assert record["subsets"]["seen"] == {"scores": "scores_seen.json", "references": "webnlg_ref_seen",
                                         "predictions": "webnlg_pred_seen.txt"}


def test_webnlg_resumed_run_reports_the_papers_layout(webnlg_demo):
    run = webnlg_demo[0]
    results = json.loads((run / "results.json").read_text())
    assert results["subsets"] == ["unseen", "seen", "all"] and results["metrics"] == ["BLEU", "METEOR", "TER"]
    assert results["paper"]["gpt2.md"]["unseen"] == {"BLEU": 46.7, "METEOR": 0.38, "TER": 0.46}
    assert results["paper"]["gpt2.lg"]["all"]["BLEU"] == 57.0
    for system in ("this_run", "untrained"):
        for subset in results["subsets"]:
            scores = json.loads((run / ("untrained" if system == "untrained" else "") /
                                 f"scores{'' if subset == 'all' else '_' + subset}.json").read_text())
            # GenerationEval's BLEU is already in percent: shown as scored; METEOR not scored here
            assert results[system][subset] == {"BLEU": round(scores["BLEU"], 2), "METEOR": None,
                                               "TER": round(scores["TER"], 4)}
    table = (run / "results.md").read_text()
    assert table.startswith("| system | BLEU U | BLEU S | BLEU A | METEOR U | METEOR S | METEOR A | TER U |")
    assert "| paper, GPT-2 M with LoRA | 46.7 | 62.1 | 55.3 | 0.38 | 0.44 | 0.41 | 0.46 | 0.33 | 0.39 |" in table
    # the recipe's training settings reached nlg train (the demo overrides others)
    config = json.loads((run / "lora" / "train_config.json").read_text())
    assert (config["weight_decay"], config["lora_dropout"], config["lr"]) == (0.01, 0.1, 2e-3)


def test_webnlg_from_decode_reuses_the_predictions(webnlg_demo):
    run, env, _, _, _ = webnlg_demo
    before = {path: path.stat().st_mtime_ns for path in (run / "predict.jsonl", run / "untrained" / "predict.jsonl")}
    seen = (run / "webnlg_pred_seen.txt").read_text()
    again = run_script("webnlg", "--demo", "--from", "decode", env=env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert stages_run(again.stderr) == ["decode", "decode", "score", "score"]
    assert {path: path.stat().st_mtime_ns for path in before} == before
    assert (run / "webnlg_pred_seen.txt").read_text() == seen


def test_webnlg_selection_never_reads_the_test_split(webnlg_demo):
    """With the test split unreadable, selection still runs to its end; the test beam search
    is the first stage to fail on it."""
    run, env, _, _, _ = webnlg_demo
    data = Path(env["DATA_DIR"])
    saved = {name: (data / name).read_bytes() for name in ("test.jsonl", "test_formatted.jsonl")}
    selection = (run / "selection.json").read_text()
    try:
        for name in saved:
            (data / name).write_text("this is not a test split\n")
        result = run_script("webnlg", "--demo", "--from", "select", env=env)
    finally:
        for name, content in saved.items():
            (data / name).write_bytes(content)
    assert result.returncode == 2 and "test_formatted.jsonl:1: not valid JSON" in result.stderr
    # the candidates' validation searches were kept (they fit the settings), only re-scored
    assert stages_run(result.stderr) == ["select", "beam"]
    assert (run / ".done-select").is_file() and (run / "selection.json").read_text() == selection


# ---------------------------------------------------------------------------------------------
# DART: its own recipe (no weight decay, dropout or label smoothing), one subset, two seeds
# ---------------------------------------------------------------------------------------------


def test_dart_demo_runs_two_seeds_with_darts_recipe_one_resumed(tmp_path, toy_env, e2e_demo, dart_raw_dir):
    if not (dart_raw_dir / "dart-v1.1.1-full-test.xml").is_file():
        pytest.skip("shared DART data missing")
    base = tmp_path / "base"  # a copy: the base's content is changed at the end
    shutil.copytree(pretrained(e2e_demo), base)
    env = toy_env(tmp_path, INIT_CHECKPOINT=str(base), SCORE_ARGS=NO_METEOR, SEEDS="110 111")
    result = run_script("dart", "--demo", env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    work = tmp_path / "run"
    per_seed = ["seed", "train", "select", "beam", "untrained", "decode", "decode", "score", "score"]
    assert stages_run(result.stderr)[:19] == ["data", *per_seed, *per_seed]  # data once, for both
    records = {}
    for seed in (110, 111):
        run = work / f"seed-{seed}"
        config = json.loads((run / "lora" / "train_config.json").read_text())
        assert config["random_seed"] == seed
        assert (config["weight_decay"], config["lora_dropout"], config["label_smooth"]) == (0.0, 0.0, 0.0)
        assert config["train_data"].endswith("valid.jsonl")  # no DART train split here: the demo says so
        assert len((run / "dart_pred.txt").read_text().splitlines()) == 6
        assert len(list((run / "dart_ref").iterdir())) == 6
        results = json.loads((run / "results.json").read_text())
        assert results["subsets"] == ["all"] and results["paper"]["gpt2.md"]["all"]["BLEU"] == 47.1
        assert (run / "results.md").read_text().startswith("| system | BLEU | METEOR | TER |")
        records[seed] = json.loads((run / "run.json").read_text())
        assert records[seed]["seed"] == seed and records[seed]["settings"]["SEED"] == str(seed)
    # the seeds of one row: every setting but SEED shared
    settings = [{k: v for k, v in records[seed]["settings"].items() if k != "SEED"} for seed in (110, 111)]
    assert settings[0] == settings[1]
    adapters = [(work / f"seed-{seed}" / "lora" / "checkpoint-10" / "adapter_model.safetensors").read_bytes()
                for seed in (110, 111)]
    assert adapters[0] != adapters[1]
    # seed 111 was interrupted while scoring: a re-run skips seed 110 and finishes 111
    (work / "seed-111" / ".done-score").unlink()
    (work / "seed-111" / "scores.json").unlink()
    before = (work / "seed-110" / "run.json").stat().st_mtime_ns
    again = run_script("dart", "--demo", env=env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert stages_run(again.stderr)[:4] == ["seed", "seed", "score", "score"]
    assert (work / "seed-110" / "run.json").stat().st_mtime_ns == before
    assert (work / "seed-111" / "scores.json").is_file()
    # the seeds' table, made again since seed 111 was scored again: one row of two seeds
    assert stages_run(again.stderr)[-1] == "results"
    table = json.loads((work / "results.json").read_text())
    (row,) = [row for row in table["rows"] if row["kind"] == "run"]
    assert row["seeds"] == [110, 111] and row["params"] == records[110]["params"]
    assert sorted(run["seed"] for run in row["runs"]) == [110, 111]
    assert "| gpt2.tiny | untrained | n=2: 110, 111 |" in (work / "results.md").read_text()
    assert (work / "results.md").read_text() in again.stdout
    # the base's identity is in the train stage's record: other content at the same path is
    # refused before any work, naming BASE with both identities (issue 29 case 4)
    assert "BASE=config.json: " in (work / "seed-110" / ".done-train").read_text()
    with open(base / "config.json", "a") as handle:
        handle.write("\n")
    refused = run_script("dart", "--demo", env=env)
    assert refused.returncode == 2 and "BASE=" in refused.stderr, refused.stderr[-2000:]
    assert stages_run(refused.stderr) == []
