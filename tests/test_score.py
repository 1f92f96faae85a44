"""nlg.score: the `nlg score` stage (suite choice, options); the suites are tested in tests/metrics."""

from __future__ import annotations

import hashlib
import json

from helpers import BOM, nlg

from nlg.cli import main
from nlg.score import infer_suite


def test_infer_suite(tmp_path):
    (tmp_path / "refs").mkdir()
    (tmp_path / "ref0").write_text("a\n")
    (tmp_path / "e2e_ref.txt").write_text("a\n\n")
    assert infer_suite(tmp_path / "refs") == "webnlg"  # a folder of reference0, ...
    assert infer_suite(tmp_path / "ref") == "webnlg"  # a prefix whose PREFIX0 exists
    assert infer_suite(tmp_path / "e2e_ref.txt") == "e2e"
    assert infer_suite(tmp_path / "testset_w_refs.csv") == "e2e"


def test_options_of_the_other_suite_are_errors(tmp_path, capsys):
    (tmp_path / "reference0").write_text("a b\n")
    (tmp_path / "ref.txt").write_text("a b\n\n")
    (tmp_path / "hyp").write_text("a b\n")
    assert main(["score", str(tmp_path), str(tmp_path / "hyp"), "-p"]) == 2
    assert "error: --pymteval: not an option of the webnlg suite" in capsys.readouterr().err
    assert main(["score", str(tmp_path / "ref.txt"), str(tmp_path / "hyp"), "-nr", "1"]) == 2
    assert "error: --num_refs: not an option of the e2e suite" in capsys.readouterr().err


def test_webnlg_json_is_flat_and_keeps_the_metrics_asked_for(tmp_path, capsys):
    (tmp_path / "reference0").write_text("a b c d\n")
    (tmp_path / "hyp").write_text("a b c d\n")
    out = tmp_path / "scores.json"
    args = ["score", str(tmp_path), str(tmp_path / "hyp"), "-m", "ter,bleu", "--json", str(out)]
    assert main(args) == 0
    saved = json.loads(out.read_text())
    assert {k: v for k, v in saved.items() if k != "scored"} == {"BLEU": 100.0, "TER": 0.0}
    assert list(saved) == ["BLEU", "TER", "scored"]  # the metrics first, as before
    # what was scored: the suite, no dataset (none given), one instance and the texts' hashes
    ref_hash = hashlib.sha256(b'[["a b c d"]]').hexdigest()
    assert saved["scored"] == {"suite": "webnlg", "dataset": None, "metrics": ["BLEU", "TER"],
                               "instances": 1, "references_sha256": ref_hash,
                               "predictions_sha256": hashlib.sha256(b'["a b c d"]').hexdigest(),
                               "options": {"metrics": "ter,bleu"}}
    assert capsys.readouterr().out.splitlines()[:3] == [
        "  BLEU     TER",
        "------  ------",
        "100.00  0.0000",
    ]


def test_dataset_is_recorded_and_must_fit_the_suite(tmp_path, capsys):
    (tmp_path / "reference0").write_text("a b c d\n")
    (tmp_path / "hyp").write_text("a b c\n")
    out = tmp_path / "scores.json"
    args = ["score", str(tmp_path), str(tmp_path / "hyp"), "-m", "bleu", "--json", str(out)]
    assert main([*args, "--dataset", "dart", "-nr", "1"]) == 0
    record = json.loads(out.read_text())["scored"]
    assert (record["suite"], record["dataset"], record["options"]) == ("webnlg", "dart", {"num_refs": 1, "metrics": "bleu"})
    capsys.readouterr()
    assert main([*args, "--dataset", "e2e", "--suite", "webnlg"]) == 2
    assert capsys.readouterr().err == "nlg score: error: --suite webnlg: e2e is scored with the e2e suite\n"


def test_scores_file_feeds_nlg_results_and_another_datasets_is_refused(tmp_path, capsys):
    (tmp_path / "reference0").write_text("a b c d\n")
    (tmp_path / "hyp").write_text("a b c d\n")
    out = tmp_path / "scores.json"
    assert main(["score", str(tmp_path), str(tmp_path / "hyp"), "-m", "bleu,ter", "--dataset", "webnlg",
                 "--json", str(out)]) == 0
    tables = ["--md", str(tmp_path / "r.md"), "--json", str(tmp_path / "r.json")]
    assert main(["results", "webnlg", "--card", "gpt2.md", "--scores", f"all={out}", *tables]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["this_run"]["all"]["BLEU"] == 100.0
    capsys.readouterr()
    assert main(["results", "dart", "--card", "gpt2.md", "--scores", f"all={out}", *tables]) == 2
    assert capsys.readouterr().err.endswith("scores.json: scored.dataset is 'webnlg', not 'dart'\n")


# ---------------------------------------------------------------------------------------------
# A UTF-8 byte-order mark does not change scores
# ---------------------------------------------------------------------------------------------


def test_a_bom_does_not_change_scores(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no Java: BLEU and NIST, which the BOM shifted
    refs = b"The Vaults is a pub near Cafe Adriatic.\nThe Vaults pub is near Cafe Adriatic.\n\nA cafe.\n\n"
    preds = b"The Vaults is a pub near the Cafe Adriatic.\nA coffee shop.\n"
    scores = {}
    for name, mark in (("plain", b""), ("bom", BOM)):
        (tmp_path / f"{name}_r.txt").write_bytes(mark + refs)
        (tmp_path / f"{name}_h.txt").write_bytes(mark + preds)
        assert nlg("score", tmp_path / f"{name}_r.txt", tmp_path / f"{name}_h.txt", "--json", tmp_path / f"{name}.json") == 0
        scores[name] = json.loads((tmp_path / f"{name}.json").read_text())
    assert scores["bom"] == scores["plain"] and scores["plain"]["BLEU"] > 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "byte-order mark" in line]
    assert notes == [f"note: {tmp_path / f'bom_{x}.txt'}: removed the UTF-8 byte-order mark at its start" for x in "rh"]


def test_a_bom_does_not_change_webnlg_scores(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    scores = {}
    for name, mark in (("plain", b""), ("bom", BOM)):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "reference0").write_bytes(mark + b"the cat sat on the mat\nhello world\n")
        (folder / "hypothesis").write_bytes(mark + b"the cat sat on a mat\nhello world\n")
        assert nlg("score", folder, folder / "hypothesis", "-m", "bleu,chrf++,ter", "--json", folder / "s.json") == 0
        scores[name] = json.loads((folder / "s.json").read_text())
    assert scores["bom"] == scores["plain"]
