"""nlg.pipeline.settings and nlg.pipeline.stages, without a run: settings resolved from the
environment, the demo and the recipe; a method's settings; numbers checked as nlg train checks
them; stage records, their differences, --from's removals (issue 26 item 1; issue 29 cases 2, 9)."""

import hashlib
import json
from pathlib import Path

import pytest

from nlg import methods
from nlg.pipeline.settings import NUMBERS, Refusal, check, resolve, size_problems, split_problems
from nlg.pipeline.stages import (
    STAGES,
    Records,
    check_run,
    describe_identity,
    differences,
    mark_done,
    removals,
)

TOY = {"NPROC": "1", "WORK_DIR": "/nonexistent/run", "DATA_DIR": "/nonexistent/data"}


@pytest.mark.parametrize("train, valid, select, select_split, name", [
    ("test", "valid", "last", "", "TRAIN_SPLIT=test"),
    ("train", "test", "valid_loss", "test", "VALID_SPLIT=test"),
    ("train", "valid", "valid_metric", "test", "SELECT_SPLIT=test"),
])
def test_the_test_split_never_reaches_training_or_selection(train, valid, select, select_split, name):
    problems = split_problems(train, valid, select, select_split)
    assert problems and problems[0].startswith(name)
    env = {**TOY, "TRAIN_SPLIT": train, "VALID_SPLIT": valid, "SELECT": select, "SELECT_SPLIT": select_split}
    with pytest.raises(Refusal, match=name):
        resolve("webnlg", env)


def test_usual_splits_pass():
    assert split_problems("train", "valid", "valid_metric", "valid") == []
    assert split_problems("valid", "", "last", "") == []


def test_a_size_of_another_method_is_named_with_its_owners():
    assert size_problems("prefix", {"ADAPTER_DIM": "8"}) == [
        "ADAPTER_DIM=8 is a setting of adapter-l, adapter-h, not of --method prefix"]
    assert "other methods than lora" in size_problems("lora", {"TOP_LAYERS": "2"})[0]
    assert size_problems("adapter-l", {"ADAPTER_DIM": "8"}) == []
    assert size_problems("lora", {"VERA_RANK": "8"}) == ["VERA_RANK=8: settings of other methods than lora (--method NAME)"]
    assert size_problems("full", {"LORA_DROPOUT": "0.2"}) == []  # not a size: means nothing to full


# ---- settings resolved: environment, then the demo's, then the recipe ---------------------------


def test_settings_come_from_the_environment_then_the_demo_then_the_recipe():
    s = resolve("e2e", {**TOY, "LR": "1e-3"}, demo=True)
    assert (s["LR"], s["BATCH"], s["WEIGHT_DECAY"]) == ("1e-3", "8", "0.01")  # env, demo, recipe
    assert (s["LORA_DIM"], s["LORA_ALPHA"], s["LORA_TARGETS"], s["LORA_DROPOUT"]) == ("8", "16", "q,v,o,fc", "0.1")
    assert (s["VALID_SPLIT"], s["SELECT"], s["TRAIN_SPLIT"], s["SEQ_LEN"]) == ("", "last", "valid", "128")
    assert s["EVAL_INTERVAL"] == s["SAVE_INTERVAL"] == "200" and s.pretrain and s.seeds == []
    assert s["RAW_DIR"] == "download into /nonexistent/data/raw" and s["PRETRAIN_EPOCHS"] == "3"
    webnlg = resolve("webnlg", TOY, demo=True)
    assert (webnlg["VALID_SPLIT"], webnlg["SELECT"], webnlg["SAVE_INTERVAL"]) == ("valid", "valid_loss", "150")
    assert webnlg["WORK_DIR"] == "/nonexistent/run"
    # set but empty: the recipe's name keeps the empty value (SCORE_ARGS=: mteval-v13a); VALID_SPLIT= no validation
    paper = resolve("e2e", {"NPROC": "1", "SCORE_ARGS": "", "VALID_SPLIT": ""})
    assert (paper["SCORE_ARGS"], paper["VALID_SPLIT"], paper["SELECT"]) == ("", "", "last")
    assert (paper["WORK_DIR"], paper["MODEL_CARD"], paper["LR"], paper["LORA_DIM"]) == ("runs/e2e-gpt2.md", "gpt2.md",
                                                                                      "0.0002", "4")
    assert resolve("e2e", {"NPROC": "1"})["SELECT"] == "valid_loss" and not paper.pretrain


def test_another_method_has_its_own_settings_and_work_dir():
    s = resolve("e2e", {"NPROC": "1", "METHOD": "vera", "VERA_DROPOUT": "0.05"}, demo=True)
    assert s.method_names == ["VERA_RANK", "VERA_D_INITIAL", "VERA_DROPOUT"]
    assert s.method_args() == ["--method", "vera", "--vera_rank", "1024", "--vera_dropout", "0.05"]
    assert "LORA_DIM" not in s.values and s["WORK_DIR"] == "runs/e2e-demo-vera" and not s.own_recipe()
    assert resolve("e2e", {"NPROC": "1"}).own_recipe()  # LoRA: the recipe's own rows
    adapter = resolve("e2e", {"NPROC": "1"}, method_flag="adapter-l")
    assert adapter["ADAPTER_DIM"] == str(methods.get("adapter-l").defaults["adapter_dim"])
    # a method the paper gives no recipe for: the dataset's own, where LR, EPOCHS and BATCH are given
    with pytest.raises(Refusal, match="set LR, EPOCHS and BATCH"):
        resolve("e2e", {"NPROC": "1", "METHOD": "vblora"})
    assert resolve("e2e", {"NPROC": "1", "METHOD": "vblora"}, demo=True)["LR"] == "2e-3"
    with pytest.raises(Refusal, match="disagree"):
        resolve("e2e", {"NPROC": "1", "METHOD": "top2"}, method_flag="full")
    with pytest.raises(Refusal, match=r"--lora_targets: unknown \['zz'\]"):
        resolve("e2e", {"NPROC": "1", "LORA_TARGETS": "q,zz"})


@pytest.mark.parametrize("env, message", [
    ({"SEEDS": "1 01"}, 'SEEDS="1 01" names seed(s) 1 more than once'),
    ({"SELECT": "valid_loss", "VALID_SPLIT": ""}, "SELECT=valid_loss needs a validation split"),
    ({"SELECT": "valid_metric", "SELECT_SPLIT": "", "VALID_SPLIT": ""}, "SELECT=valid_metric needs a split"),
    ({"BEAM": "0"}, "BEAM='0' is not a whole number >= 1"),
    ({"VERA_RANK": "0", "METHOD": "vera"}, "VERA_RANK='0' is not a whole number >= 1"),
])
def test_bad_settings_are_refused(env, message):
    with pytest.raises(Refusal, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve("e2e", {**TOY, **env})


def test_seeds_follow_seed():
    assert resolve("e2e", {**TOY, "SEED": "7"}, seed_count="3").seeds == [7, 8, 9]
    assert resolve("e2e", {**TOY, "SEEDS": "110 111"}).seeds == [110, 111]


def test_the_pipelines_numbers_are_nlg_trains():
    """LR=0 is refused by both (a run at learning rate 0 cannot learn), and every other train
    number's bound is check_config's: the value at the bound passes or fails both alike."""
    pytest.importorskip("torch")
    from nlg.training.settings import TrainConfig, check_config

    flags = {"LR": "lr", "WARMUP": "warmup_step", "BATCH": "train_batch_size", "GRAD_ACC": "grad_acc",
             "EPOCHS": "max_epoch", "SAVE_INTERVAL": "save_interval", "EVAL_INTERVAL": "eval_interval",
             "WEIGHT_DECAY": "weight_decay", "CLIP": "clip", "ADAM_BETA2": "adam_beta2", "LABEL_SMOOTH": "label_smooth"}
    for name, flag in flags.items():
        for value in (0, 1, -1):
            pipeline_ok = check([f"{name}={value}"]) == []
            kind = int if NUMBERS[name].kind == "int" else float
            train_ok = check_config(TrainConfig(train_data="x.jsonl", **{flag: kind(value)})) == []
            assert pipeline_ok == train_ok or value < 0, (name, value)  # "-1" is no whole number for the pipeline


def test_a_methods_settings_are_checked_by_its_own_rules():
    """A method's settings are refused before any work exactly where the method's own `check`
    (what nlg train runs) refuses them: by its flag types and bounds, then by `check` itself."""
    for method in map(methods.get, methods.names()):
        for flag in method.flags:
            kind = method.flag_types.get(flag, int)
            if kind not in (int, float):
                continue
            for value in ((0, 1, 2, -1) if kind is int else (0.0, 0.5, 1.0, -1.0, 1e30)):
                text = str(value) if kind is int else repr(value)
                try:
                    resolve("e2e", {**TOY, "METHOD": method.name, flag.upper(): text}, demo=True)
                    refused = False
                except Refusal:
                    refused = True
                values = {**method.defaults, **method.demo_values, flag: value}
                assert refused == (method.check(values) != []), (method.name, flag, value)


# ---- records, differences, --from ---------------------------------------------------------------


def test_identity_is_the_files_size_and_full_sha256(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(b"hi\n")
    assert describe_identity(tmp_path / "a.jsonl") == f"3 bytes, sha256 {hashlib.sha256(b'hi' + bytes([10])).hexdigest()}"
    assert describe_identity(tmp_path / "nothing") == "missing"


def toy(tmp_path: Path, **env):
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    for name in ("valid.jsonl", "test.jsonl", "test_formatted.jsonl"):
        (data / name).write_text(name + "\n")
    return resolve("e2e", {"NPROC": "1", "WORK_DIR": str(tmp_path / "run"), "DATA_DIR": str(data), **env}, demo=True)


def test_a_record_holds_every_earlier_stages_settings_and_inputs(tmp_path):
    s = toy(tmp_path)
    records = Records(s)
    train = dict(records.record("train", 111))
    assert train["SEED"] == "111" and train["LORA_DIM"] == "8" and train["INIT_CHECKPOINT"] == "(the pretrain stage)"
    assert train["BASE"] == "(the pretrain stage)" and train["valid.jsonl"].startswith("12 bytes, sha256 ")
    assert "ADAPTER_DIM" not in train and "BEAM" not in train and train["DATASET"] == "e2e"
    untrained = [name for name, _ in records.record("untrained", 111)]
    assert "BEAM" in untrained and "SUBSETS" not in untrained
    score = [name for name, _ in records.record("score", 111)]
    assert score.index("LR") < score.index("BEAM") < score.index("SUBSETS") < score.index("SCORE_ARGS")
    assert len(score) == len(set(score))
    assert [name for name, _ in Records(toy(tmp_path, INIT_CHECKPOINT=str(tmp_path))).record("score", 1)].count(
        "PRETRAIN_LR") == 0  # no pretrain stage when a base is given


def test_differences_name_each_change_with_both_values():
    recorded = "A=1\nB=2\nC=3\nD=\n"
    assert differences(recorded, [("A", "1"), ("B", "5"), ("E", "x")]) == \
        "B=2 (now 5); E=x (not in the record); C=3 (now not used)"
    assert differences(recorded, [("A", "1"), ("B", "2"), ("C", "3")]) == ""  # D= unused: no difference


def test_check_run_names_the_first_changed_stage_and_every_difference(tmp_path):
    s = toy(tmp_path)
    records = Records(s)
    s.work_dir.mkdir()
    for stage in ("data", "pretrain", "train", "select", "beam"):
        mark_done(records, stage, s.work_dir, 110)
    check_run(records, s.work_dir, 110)
    changed = toy(tmp_path, LR="0.5", BEAM="4")
    with pytest.raises(Refusal) as refusal:
        check_run(Records(changed), s.work_dir, 110)
    assert str(refusal.value) == (f"{s.work_dir}/.done-train was made with other settings: LR=2e-3 (now 0.5); "
                                  "BEAM=5 (now 4); redo it and every later stage with --from train, or use another "
                                  "WORK_DIR")
    check_run(Records(changed), s.work_dir, 110, until="train")  # the stages before --from train fit
    (s.work_dir / ".done-select").write_text("")
    with pytest.raises(Refusal, match="no settings recorded"):
        check_run(records, s.work_dir, 110)


def test_from_removes_the_stage_and_every_later_ones_outputs(tmp_path):
    s = toy(tmp_path, SEEDS="1 2")
    runs = [s.work_dir / "seed-1", s.work_dir / "seed-2"]
    for run in runs:
        (run / "lora").mkdir(parents=True)
        for name in ("e2e_ref.txt", "e2e_pred.txt", "scores.json", "predict.jsonl", ".done-decode"):
            (run / name).write_text("")
    removed = removals(s, "decode", runs)
    names = {path.relative_to(s.work_dir).as_posix() for path in removed}
    assert {"seed-1/e2e_ref.txt", "seed-2/e2e_pred.txt", "seed-1/scores.json", "seed-1/.done-decode",
            "seed-2/.done-score", "results.md", "results.json"} <= names
    assert not any(name.endswith(("predict.jsonl", "lora")) for name in names)
    train = {path.relative_to(s.work_dir).as_posix() for path in removals(s, "train", runs)}
    assert {"seed-1/lora", "seed-1/select", "seed-1/selection.json"} <= train and ".done-data" not in train
    assert ".done-pretrain" in {path.name for path in removals(s, "pretrain", runs)}
    assert [stage.name for stage in STAGES] == ["data", "pretrain", "train", "select", "beam", "untrained",
                                                "decode", "score"]


def test_chosen_names_the_selected_checkpoint_or_says_to_select_again(tmp_path):
    from nlg.pipeline.chain import Failed, chosen

    (tmp_path / "checkpoint-4").mkdir()
    selection = tmp_path / "selection.json"
    selection.write_text(json.dumps({"checkpoint": str(tmp_path / "checkpoint-4")}))
    assert chosen(tmp_path) == tmp_path / "checkpoint-4"
    for content, reason in ((json.dumps({"checkpoint": str(tmp_path / "gone")}), "which is gone"),
                            ("[", "not valid JSON"), ("{}", 'no "checkpoint"')):
        selection.write_text(content)
        with pytest.raises(Failed) as failed:
            chosen(tmp_path)
        assert reason in str(failed.value) and str(failed.value).endswith(": rerun with --from select")


def test_prune_keeps_only_the_newest_checkpoint(tmp_path, monkeypatch):
    from nlg import pipeline

    for step in (200, 1000, 800):
        (tmp_path / f"checkpoint-{step}").mkdir()
    monkeypatch.setattr("nlg.training.checkpoints.latest_checkpoint", lambda d: d / "checkpoint-1000")
    assert pipeline.prune_checkpoints(tmp_path) == tmp_path / "checkpoint-1000"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-1000"]


def test_the_command_line_is_the_scripts(capsys):
    from nlg.pipeline.chain import main

    assert main(["--bogus"]) == 2 and "unknown argument --bogus" in capsys.readouterr().err
    assert main([]) == 2 and "which dataset?" in capsys.readouterr().err
    assert main(["e2e", "--from", "nowhere"]) == 2 and "unknown stage 'nowhere'" in capsys.readouterr().err
    assert main(["--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: scripts/reproduce.sh DATASET [--demo]")


@pytest.mark.parametrize("name", methods.names())
def test_every_method_resolves_to_its_own_flags(name):
    """Every registered method runs through the pipeline by its own flags alone: its settings
    are its flags upper-cased, only they reach nlg train, and its train record holds them."""
    method = methods.get(name)
    s = resolve("e2e", {**TOY, "METHOD": name}, demo=True)
    args = s.method_args()
    assert args[:2] == ["--method", name]
    assert {flag.removeprefix("--") for flag in args[2::2]} <= set(method.flags)
    others = {flag.upper() for other in methods.names() for flag in methods.get(other).flags} - set(s.method_names)
    train = dict(Records(s).record("train", 110))
    assert not others & set(train) and set(s.method_names) <= set(train)
    assert s.describe_method()  # the train stage's log line
    assert s["WORK_DIR"] == TOY["WORK_DIR"]
