"""nlg.pipeline.settings: splits and method sizes, checked before any work (issue 29 cases 2, 9)."""

import json

import pytest

from nlg.pipeline import main
from nlg.pipeline.settings import size_problems, split_problems


@pytest.mark.parametrize("train, valid, select, select_split, name", [
    ("test", "valid", "last", "", "TRAIN_SPLIT=test"),
    ("train", "test", "valid_loss", "test", "VALID_SPLIT=test"),
    ("train", "valid", "valid_metric", "test", "SELECT_SPLIT=test"),
])
def test_the_test_split_never_reaches_training_or_selection(train, valid, select, select_split, name):
    problems = split_problems(train, valid, select, select_split)
    assert problems and problems[0].startswith(name)


def test_usual_splits_pass():
    assert split_problems("train", "valid", "valid_metric", "valid") == []
    assert split_problems("valid", "", "last", "") == []


def test_a_size_of_another_method_is_named_with_its_owners():
    assert size_problems("prefix", {"ADAPTER_DIM": "8"}) == [
        "ADAPTER_DIM=8 is a setting of adapter-l, adapter-h, not of --method prefix"]
    assert "other methods than lora" in size_problems("lora", {"TOP_LAYERS": "2"})[0]
    assert size_problems("adapter-l", {"ADAPTER_DIM": "8"}) == []


def test_the_settings_command_prints_one_line_and_exits_2(capsys):
    assert main(["settings", "METHOD=prefix", "ADAPTER_DIM=8", "TRAIN_SPLIT=test"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("reproduce.sh: TRAIN_SPLIT=test")
    assert main(["settings", "METHOD=lora", "TRAIN_SPLIT=train"]) == 0


def test_prune_keeps_only_the_newest_checkpoint(tmp_path, monkeypatch):
    from nlg import pipeline

    for step in (200, 1000, 800):
        (tmp_path / f"checkpoint-{step}").mkdir()
    monkeypatch.setattr("nlg.training.checkpoints.latest_checkpoint", lambda d: d / "checkpoint-1000")
    assert pipeline.prune_checkpoints(tmp_path) == tmp_path / "checkpoint-1000"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-1000"]


def test_identity_is_the_files_size_and_full_sha256(tmp_path, capsys):
    """The stage records' identity of an input (nlg.files.file_identity), or `missing`."""
    import hashlib

    from nlg.pipeline import main

    (tmp_path / "a.jsonl").write_bytes(b"hi\n")
    assert main(["identity", str(tmp_path / "a.jsonl")]) == 0
    assert capsys.readouterr().out == f"3 bytes, sha256 {hashlib.sha256(b'hi' + bytes([10])).hexdigest()}\n"
    assert main(["identity", str(tmp_path / "nothing")]) == 0
    assert capsys.readouterr().out == "missing\n"


def test_chosen_names_the_selected_checkpoint_or_says_to_select_again(tmp_path, capsys):
    from nlg.pipeline import main

    (tmp_path / "checkpoint-4").mkdir()
    selection = tmp_path / "selection.json"
    selection.write_text(json.dumps({"checkpoint": str(tmp_path / "checkpoint-4")}))
    assert main(["chosen", str(selection)]) == 0
    assert capsys.readouterr().out == f"{tmp_path / 'checkpoint-4'}\n"
    for content, reason in ((json.dumps({"checkpoint": str(tmp_path / "gone")}), "which is gone"),
                            ("[", "not valid JSON"), ("{}", 'no "checkpoint"')):
        selection.write_text(content)
        assert main(["chosen", str(selection)]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and reason in err and err.endswith(": rerun with --from select\n")
