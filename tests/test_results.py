"""nlg.results: a run's scores beside the paper's, on the paper's scales and in its layout."""

from __future__ import annotations

import json

import pytest

from nlg.files import InputError
from nlg.results import main, on_paper_scale, results, subset_files


@pytest.fixture
def scores(write, tmp_path):
    """scores(name, **values) -> a `nlg score --json` file."""

    def make(name: str, **values) -> str:
        return str(write(tmp_path / name, json.dumps(values)))

    return make


def test_scales_follow_the_papers_table():
    e2e_percent, webnlg_percent = frozenset({"BLEU", "METEOR", "ROUGE_L"}), frozenset({"BLEU"})
    # E2E scores BLEU on 0..1, the paper prints it in percent
    assert on_paper_scale(0.70412, "BLEU", e2e_percent, frozenset()) == 70.41
    assert on_paper_scale(8.851234, "NIST", e2e_percent, frozenset()) == 8.8512
    # GenerationEval's BLEU is already 0..100; METEOR and TER are fractions in both
    assert on_paper_scale(55.314, "BLEU", webnlg_percent, webnlg_percent) == 55.31
    assert on_paper_scale(0.41237, "METEOR", webnlg_percent, webnlg_percent) == 0.4124
    assert on_paper_scale(55.3, "BLEU", frozenset(), webnlg_percent) == 0.553
    assert on_paper_scale(None, "BLEU", webnlg_percent, webnlg_percent) is None


def test_webnlg_in_the_papers_layout(scores):
    run = {"all": scores("a.json", BLEU=40.0, METEOR=0.3, TER=0.5),
           "seen": scores("s.json", BLEU=50.0, METEOR=0.35, TER=0.45, **{"chrF++": 0.6}),
           "unseen": scores("u.json", BLEU=30.0, METEOR=None, TER=0.55)}
    untrained = {subset: scores(f"x{subset}.json", BLEU=0.0, METEOR=0.01, TER=1.2) for subset in run}
    text, report = results("webnlg", "gpt2.md", run, untrained)
    lines = text.splitlines()
    assert lines[0] == ("| system | BLEU U | BLEU S | BLEU A | METEOR U | METEOR S | METEOR A | "
                        "TER U | TER S | TER A |")
    assert lines[1] == "| --- |" + " ---: |" * 9
    assert lines[2] == "| this run (gpt2.md) | 30.0 | 50.0 | 40.0 | n/a | 0.35 | 0.3 | 0.55 | 0.45 | 0.5 |"
    assert lines[3] == "| untrained gpt2.md | 0.0 | 0.0 | 0.0 | 0.01 | 0.01 | 0.01 | 1.2 | 1.2 | 1.2 |"
    assert lines[4] == "| paper, GPT-2 M with LoRA | 46.7 | 62.1 | 55.3 | 0.38 | 0.44 | 0.41 | 0.46 | 0.33 | 0.39 |"
    assert lines[5] == "| paper, GPT-2 L with LoRA | 48.4 | 64.0 | 57.0 | 0.39 | 0.45 | 0.42 | 0.45 | 0.32 | 0.38 |"
    assert "TER: lower is better." in text and "U, S, A: categories unseen in training, seen, all." in text
    assert report["subsets"] == ["unseen", "seen", "all"] and report["percent"] == ["BLEU"]
    assert report["this_run"]["seen"] == {"BLEU": 50.0, "METEOR": 0.35, "TER": 0.45}  # chrF++: not the paper's
    assert report["this_run"]["unseen"]["METEOR"] is None
    assert report["paper"]["gpt2.lg"]["unseen"] == {"BLEU": 48.4, "METEOR": 0.39, "TER": 0.45}


def test_e2e_and_dart_have_one_column_per_metric(scores):
    e2e = scores("e2e.json", BLEU=0.6834, NIST=8.6, METEOR=0.4521, ROUGE_L=0.7012, CIDEr=2.41)
    text, report = results("e2e", "gpt2.tiny", {"all": e2e}, {})
    assert text.splitlines()[0] == "| system | BLEU | NIST | METEOR | ROUGE_L | CIDEr |"
    assert text.splitlines()[2] == "| this run (gpt2.tiny) | 68.34 | 8.6 | 45.21 | 70.12 | 2.41 |"
    assert "untrained" not in report and "lower is better" not in text
    assert report["paper"]["gpt2.md"]["all"]["CIDEr"] == 2.53
    text, _ = results("dart", "gpt2.lg", {"all": scores("d.json", BLEU=47.0, METEOR=0.39, TER=0.46)}, {})
    assert text.splitlines()[:3] == ["| system | BLEU | METEOR | TER |", "| --- | ---: | ---: | ---: |",
                                     "| this run (gpt2.lg) | 47.0 | 0.39 | 0.46 |"]
    assert "| paper, GPT-2 M with LoRA | 47.1 | 0.39 | 0.46 |" in text


def test_a_run_of_one_subset_is_compared_on_that_subset(scores):
    # a run scored only on seen categories: the paper's rows give their seen columns
    text, report = results("webnlg", "gpt2.md", {"seen": scores("s.json", BLEU=1.0, METEOR=0.1, TER=0.9)}, {})
    assert text.splitlines()[0] == "| system | BLEU | METEOR | TER |"
    assert report["paper"]["gpt2.md"] == {"seen": {"BLEU": 62.1, "METEOR": 0.44, "TER": 0.33}}


def test_bad_inputs_name_the_file(scores, tmp_path, write):
    good = scores("good.json", BLEU=1.0, METEOR=0.1, TER=0.9)
    e2e_scores = scores("e2e.json", NIST=3.0)
    with pytest.raises(InputError, match=r"e2e\.json: none of BLEU, METEOR, TER"):
        results("dart", "gpt2.md", {"all": e2e_scores}, {})
    with pytest.raises(InputError, match=r"bad\.json: TER is 'high', not a number or null"):
        results("dart", "gpt2.md", {"all": scores("bad.json", BLEU=1.0, TER="high")}, {})
    broken = write(tmp_path / "broken.json", '{"BLEU": 1.0,\n')
    with pytest.raises(InputError, match=r"broken\.json:2: not valid JSON"):
        results("dart", "gpt2.md", {"all": str(broken)}, {})
    with pytest.raises(InputError, match=r"missing\.json: no such file"):
        results("dart", "gpt2.md", {"all": str(tmp_path / "missing.json")}, {})
    # read as every text input is: a byte-order mark is removed, bad UTF-8 named by line
    bom = write(tmp_path / "bom.json", '\ufeff{"BLEU": 1.0, "METEOR": 0.1, "TER": 0.9}')
    assert results("dart", "gpt2.md", {"all": str(bom)}, {})[1]["this_run"]["all"]["BLEU"] == 1.0
    (tmp_path / "latin1.json").write_bytes(b'{"BLEU": 1.0,\n"note": "caf\xe9"}')
    with pytest.raises(InputError, match=r"latin1\.json:2: not valid UTF-8"):
        results("dart", "gpt2.md", {"all": str(tmp_path / "latin1.json")}, {})
    with pytest.raises(InputError, match=r"dart: no 'seen' subset \(the paper reports all\)"):
        results("dart", "gpt2.md", {"seen": good}, {})
    with pytest.raises(InputError, match="give the same"):
        results("webnlg", "gpt2.md", {"all": good, "seen": good}, {"all": good})
    with pytest.raises(InputError, match="expected SUBSET=FILE"):
        subset_files(["all=a.json", "all=b.json"], "--scores")
    with pytest.raises(InputError, match="expected SUBSET=FILE"):
        subset_files(["a.json"], "--scores")


def test_command_writes_both_files(scores, tmp_path, capsys):
    good = scores("good.json", BLEU=12.5, METEOR=0.2, TER=0.8)
    md, js = tmp_path / "out" / "results.md", tmp_path / "out" / "results.json"
    md.parent.mkdir()
    assert main(["dart", "--card", "gpt2.tiny", "--scores", f"all={good}", "--untrained", f"all={good}",
                 "--md", str(md), "--json", str(js)]) == 0
    assert capsys.readouterr().out == md.read_text() + "\n"
    report = json.loads(js.read_text())
    assert report["dataset"] == "dart" and report["model_card"] == "gpt2.tiny"
    assert report["this_run"] == report["untrained"] == {"all": {"BLEU": 12.5, "METEOR": 0.2, "TER": 0.8}}


def test_command_never_writes_over_its_inputs(scores, tmp_path):
    good = scores("good.json", BLEU=12.5, METEOR=0.2, TER=0.8)
    before = (tmp_path / "good.json").read_text()
    (tmp_path / "link.json").symlink_to(tmp_path / "good.json")
    md, js = str(tmp_path / "results.md"), str(tmp_path / "results.json")
    for outputs, message in ((["--md", good, "--json", js], r"--md .*good\.json: is the input --scores"),
                             (["--md", md, "--json", str(tmp_path / "link.json")], r"--json .*link\.json: is the input"),
                             (["--md", md, "--json", md], r"--json .*: is also --md")):
        with pytest.raises(InputError, match=message):
            main(["dart", "--card", "gpt2.tiny", "--scores", f"all={good}", *outputs])
        assert (tmp_path / "good.json").read_text() == before
        assert not (tmp_path / "results.md").exists() and not (tmp_path / "results.json").exists()
