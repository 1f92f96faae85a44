"""nlg.score: the `nlg score` stage (suite choice, options); the suites are tested in tests/metrics."""

from __future__ import annotations

import json

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
    assert json.loads(out.read_text()) == {"BLEU": 100.0, "TER": 0.0}
    assert capsys.readouterr().out.splitlines()[:3] == [
        "  BLEU     TER",
        "------  ------",
        "100.00  0.0000",
    ]
