"""nlg.results: a run's scores beside the paper's, on the paper's scales and in its layout."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from nlg import datasets
from nlg.cli import main as cli_main
from nlg.files import InputError
from nlg.results import (
    main,
    results,
    runs_results,
    subset_files,
)

E2E_METRICS = {"NIST", "ROUGE_L", "CIDEr"}


def scores_json(values: dict, dataset: str | None = None, **record) -> str:
    """What `nlg score --json` writes: the metrics, then the "scored" record (its suite by the
    metrics; the hashes stand-ins: nlg results does not read them)."""
    suite = "e2e" if E2E_METRICS & set(values) else "webnlg"
    scored = {"suite": suite, "dataset": dataset, "metrics": list(values), "instances": 3,
              "references_sha256": "0" * 64, "predictions_sha256": "1" * 64, "options": {}} | record
    return json.dumps({**values, "scored": scored})


@pytest.fixture
def scores(write, tmp_path):
    """scores(name, **values) -> a `nlg score --json` file (no dataset recorded)."""

    def make(name: str, **values) -> str:
        return str(write(tmp_path / name, scores_json(values)))

    return make


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
    with pytest.raises(InputError, match=r"e2e\.json: scored\.suite is 'e2e'; dart is scored with the webnlg suite"):
        results("dart", "gpt2.md", {"all": e2e_scores}, {})
    with pytest.raises(InputError, match=r"chrf\.json: none of BLEU, METEOR, TER"):
        results("dart", "gpt2.md", {"all": scores("chrf.json", **{"chrF++": 0.5})}, {})
    with pytest.raises(InputError, match=r'bad\.json: TER is "high", not a finite number or null'):
        results("dart", "gpt2.md", {"all": scores("bad.json", BLEU=1.0, TER="high")}, {})
    broken = write(tmp_path / "broken.json", '{"BLEU": 1.0,\n')
    with pytest.raises(InputError, match=r"broken\.json:2: not valid JSON"):
        results("dart", "gpt2.md", {"all": str(broken)}, {})
    with pytest.raises(InputError, match=r"missing\.json: no such file"):
        results("dart", "gpt2.md", {"all": str(tmp_path / "missing.json")}, {})
    # read as every text input is: a byte-order mark is removed, bad UTF-8 named by line
    bom = write(tmp_path / "bom.json", "\ufeff" + scores_json({"BLEU": 1.0, "METEOR": 0.1, "TER": 0.9}))
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


# ---- several runs and seeds: --runs ------------------------------------------------------------

DART_SETTINGS = {"LR": "2e-4", "BATCH": "8", "EPOCHS": "5"}


@pytest.fixture
def make_run(tmp_path, write):
    """make_run(name, seed, all={metric: value}, ..., untrained=None, **record) -> the run dir,
    with run.json as scripts/reproduce.sh writes it and a scores file per subset."""

    def make(name: str, seed: int, untrained: dict | None = None, settings: dict | None = None,
             dataset: str = "dart", **fields) -> Path:
        run = tmp_path / name
        subsets = {key: fields.pop(key) for key in ("all", "seen", "unseen") if key in fields}
        record = {"dataset": dataset, "model_card": "gpt2.md", "method": "lora", "seed": seed,
                  "params": 393216, "settings": {**DART_SETTINGS, **(settings or {}), "SEED": str(seed)},
                  "checkpoint": "lora/checkpoint-20", "selection": None, "subsets": {}, "untrained": None}
        record.update(fields)
        for subset, values in subsets.items():
            write(run / f"scores_{subset}.json", scores_json(values, dataset))
            record["subsets"][subset] = {"scores": f"scores_{subset}.json", "references": "r",
                                         "predictions": "p"}
        if untrained is not None:
            write(run / "untrained" / "scores.json", scores_json(untrained, dataset))
            record["untrained"] = {"all": {"scores": "untrained/scores.json"}}
        write(run / "run.json", json.dumps(record))
        return run

    return make


def test_runs_are_grouped_by_setting_and_aggregated(make_run):
    runs = [make_run("s110", 110, all={"BLEU": 45.0, "METEOR": 0.38, "TER": 0.47},
                     selection={"criterion": "valid_loss", "metric": None, "chosen_step": 20,
                                "candidates": [{"step": 10, "value": 3.21}, {"step": 20, "value": 3.02}]}),
            make_run("s111", 111, all={"BLEU": 46.0, "METEOR": 0.39, "TER": 0.46}),
            make_run("s112", 112, all={"BLEU": 47.5, "METEOR": 0.40, "TER": 0.45}),
            make_run("lr", 110, all={"BLEU": 40.0, "METEOR": 0.3, "TER": 0.5}, settings={"LR": "1e-4"})]
    text, report, _ = runs_results("dart", runs)
    lines = text.splitlines()
    assert lines[0] == "| model | method | seeds | BLEU | METEOR | TER |"
    assert lines[2] == "| GPT-2 M | LoRA 0.39M (LR=2e-4) | n=3: 110, 111, 112 | 46.2±1.3 | .39±.01 | .46±.01 |"
    assert lines[3] == "| GPT-2 M | LoRA 0.39M (LR=1e-4) | n=1: 110 | 40.0 | .30 | .50 |"
    assert lines[4] == "| GPT-2 M (paper) | LoRA 0.35M | paper | 47.1 | .39 | .46 |"
    assert "GPT-2 L" not in text  # the paper's rows for the cards shown
    assert "| GPT-2 M | LoRA 0.39M (LR=2e-4) | n=3: 110, 111, 112 | [43.0, 49.3] | [.37, .41] | [.44, .48] |" in text
    assert ("| GPT-2 M | LoRA 0.39M (LR=2e-4) | 110 | lora/checkpoint-20 | valid_loss: step 20 (10: 3.21, "
            "20: 3.02) | 45.0 | .38 | .47 |") in lines
    row = report["rows"][0]
    assert row["kind"] == "run" and row["seeds"] == [110, 111, 112] and row["params"] == 393216
    assert "SEED" not in row["settings"] and row["settings"]["LR"] == "2e-4"
    bleu = row["scores"]["all"]["BLEU"]
    assert bleu["n"] == 3 and bleu["mean"] == pytest.approx(46.16667, abs=1e-5)
    assert bleu["std"] == pytest.approx(1.25831, abs=1e-5) and bleu["ci95"][0] == pytest.approx(43.04087, abs=1e-4)
    assert [r["seed"] for r in row["runs"]] == [110, 111, 112]
    assert row["runs"][0]["selection"]["chosen_step"] == 20 and row["runs"][1]["scores"]["all"]["BLEU"] == 46.0
    # and what each seed's scores are of, as its scores file records it
    assert row["runs"][0]["scored"]["all"]["suite"] == "webnlg" and row["runs"][0]["scored"]["all"]["instances"] == 3
    assert report["rows"][1]["scores"]["all"]["TER"] == {"mean": 0.5, "std": None, "n": 1, "ci95": None}
    assert report["rows"][2] == {"kind": "paper", "label": "LoRA 0.35M", "model_card": "gpt2.md", "method": "lora",
                                 "params": "0.35M", "copied": False, "source": "LoRA paper, Table 13 (DART)", "external": False,
                                 "scores": {"all": {"BLEU": 47.1, "METEOR": 0.39, "TER": 0.46}}, "spread": {}}


def test_runs_command_writes_table_json_and_plot(make_run, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    values = {"BLEU": 5.0, "METEOR": 0.05, "TER": 0.9}
    runs = [make_run(f"s{seed}", seed, dataset="webnlg", model_card="gpt2.tiny", params=1536,
                     untrained={"BLEU": 0.0, "METEOR": 0.001, "TER": 1.6},
                     all=values, seen={**values, "BLEU": 6.0 + seed - 110}, unseen=values)
            for seed in (110, 111)]
    for run in runs:  # the demo scores its untrained model on every subset
        record = json.loads((run / "run.json").read_text())
        record["untrained"] = {s: {"scores": "untrained/scores.json"} for s in ("all", "seen", "unseen")}
        (run / "run.json").write_text(json.dumps(record))
    out = tmp_path / "out"
    args = ["nlg", "webnlg", "--runs", *map(str, runs), "--md", str(out / "results.md"),
            "--json", str(out / "results.json"), "--plot", str(out / "results.png")]
    assert main(args[1:]) == 0
    captured = capsys.readouterr()
    table = (out / "results.md").read_text()
    assert captured.out == table + "\n"
    lines = table.splitlines()
    assert lines[0].startswith("| model | method | seeds | BLEU U | BLEU S | BLEU A | METEOR U |")
    assert lines[2].startswith("| gpt2.tiny | LoRA 0.00154M | n=2: 110, 111 | 5.0±.0 | 6.5±.7 | 5.0±.0 | .05±.00 |")
    assert lines[3].startswith("| gpt2.tiny | untrained | n=2: 110, 111 | .0±.0 |") is False
    assert lines[3].startswith("| gpt2.tiny | untrained | n=2: 110, 111 | 0.0±.0 |")
    # a card the paper does not report: both of the paper's cards, as it labels its rows
    assert "| GPT-2 M (paper) | LoRA 0.35M | paper | 46.7 | 62.1 | 55.3 | .38 | .44 | .41 | .46 | .33 | .39 |" in lines
    assert "| GPT-2 L (paper) | LoRA 0.77M | paper |" in table
    assert "| GPT-2 M (paper) | FT-Top2 25.19M | paper | 18.9 | 53.6 | 36.0 |" in table  # Table 14's baselines
    report = json.loads((out / "results.json").read_text())
    paper_rows = {(r.model_card, r.method, r.params) for r in datasets.get("webnlg").recipe.paper}
    assert len(paper_rows) >= 9  # LoRA and Table 14's baselines, for GPT-2 M and L
    assert [row["kind"] for row in report["rows"]] == ["run", "untrained"] + ["paper"] * len(paper_rows)
    assert report["subsets"] == ["unseen", "seen", "all"]
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "not plotted" not in captured.err  # every row has its size


def test_runs_refusals_name_the_file(make_run, tmp_path, capsys):
    good = {"BLEU": 45.0, "METEOR": 0.38, "TER": 0.47}
    a, b = make_run("a", 110, all=good), make_run("b", 111, all=good)
    out = ["--md", str(tmp_path / "r.md"), "--json", str(tmp_path / "r.json")]

    def refused(*runs, message: str, dataset: str = "dart") -> None:
        assert cli_main(["results", dataset, "--runs", *map(str, runs), *out]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and re.search("^nlg results: error: .*" + message, err), err
        assert not (tmp_path / "r.md").exists() and not (tmp_path / "r.json").exists()

    (tmp_path / "unfinished").mkdir()
    refused(a, tmp_path / "unfinished", message=r"unfinished/run\.json: no such file \(the run has not finished")
    (b / "scores_all.json").unlink()
    refused(a, b, message=r"b/run\.json: subsets\.all\.scores: .*b/scores_all\.json: no such file")
    refused(a, make_run("c", 110, all=good), message=r"a and .*c: both seed 110 of one setting")
    refused(a, a, message=r"--runs .*a: given twice")
    refused(a, message=r"a/run\.json: a run of dart, not of webnlg", dataset="webnlg")
    refused(a, make_run("d", 112, all=good, seen=good),
            message=r"d/run\.json: subsets\.seen: not a subset the paper reports \(all\)")
    bad_seed = make_run("e", 113, all=good)
    (bad_seed / "run.json").write_text((bad_seed / "run.json").read_text().replace('"seed": 113', '"seed": "113"'))
    refused(bad_seed, message=r"e/run\.json: seed is '113', expected an integer")
    refused(make_run("f", 114, all={**good, "BLEU": float("nan")}), message=r"scores_all\.json: BLEU is NaN, not a finite number or null")
    refused(make_run("g", 115, all={**good, "TER": True}), message=r"scores_all\.json: TER is true, not a finite number or null")
    with pytest.raises(SystemExit):
        main(["dart", "--runs", str(a), "--card", "gpt2.md", *out])
    assert "give no --card" in capsys.readouterr().err


# ---- issue 23 case 1: a scores file is checked against what it claims to be --------------------

def test_scores_of_another_suite_dataset_or_kind_are_refused(write, tmp_path, capsys):
    """Each refusal run as a user would: one line naming the file and key, exit 2, nothing written."""
    out = ["--md", str(tmp_path / "r.md"), "--json", str(tmp_path / "r.json")]
    webnlg = {"BLEU": 55.3, "METEOR": 0.41, "TER": 0.39}
    e2e = {"BLEU": 0.0087, "NIST": 1.0, "METEOR": 0.1, "ROUGE_L": 0.2, "CIDEr": 0.1}

    def refused(dataset: str, content: str, message: str) -> None:
        path = write(tmp_path / "scores.json", content)
        assert cli_main(["results", dataset, "--card", "gpt2.md", "--scores", f"all={path}", *out]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and re.search(r"^nlg results: error: .*scores\.json: " + message, err), err
        assert not (tmp_path / "r.md").exists() and not (tmp_path / "r.json").exists()

    # an E2E file in the WebNLG table (it showed BLEU 0.87), a WebNLG file in the E2E table (3446.66)
    refused("webnlg", scores_json(e2e, "e2e"), r"scored\.suite is 'e2e'; webnlg is scored with the webnlg suite")
    refused("e2e", scores_json(webnlg, "webnlg"), r"scored\.suite is 'webnlg'; e2e is scored with the e2e suite")
    # same suite, other dataset
    refused("dart", scores_json(webnlg, "webnlg"), r"scored\.dataset is 'webnlg', not 'dart'")
    # not finite numbers: NaN, Infinity, true, a string
    for bad, shown in (("NaN", "NaN"), ("Infinity", "Infinity"), ("-Infinity", "-Infinity"), ("true", "true"),
                       ('"55.3"', '"55.3"')):
        content = scores_json(webnlg, "webnlg").replace('"BLEU": 55.3', f'"BLEU": {bad}')
        refused("webnlg", content, f"BLEU is {re.escape(shown)}, not a finite number or null")
    # a metric that is not the suite's, and a record that disagrees with the metrics held
    refused("webnlg", scores_json({**webnlg, "NIST": 8.0}, "webnlg", suite="webnlg"),
            r"NIST is not a metric of the webnlg suite \(BLEU, METEOR, chrF\+\+, TER\)")
    refused("webnlg", scores_json(webnlg, "webnlg", metrics=["BLEU"]),
            r'scored\.metrics is \["BLEU"\], but the file holds \["BLEU", "METEOR", "TER"\]')
    # an old flat file without the record: rescore, with the command to do it
    refused("webnlg", json.dumps(webnlg), r'no "scored" record .*score it again: nlg score REF PRED '
            r"--dataset webnlg -nr 6 -m bleu,meteor,ter --json")
    refused("webnlg", "[1, 2]", r"expected the JSON object `nlg score --json` writes")


def test_a_file_scored_without_dataset_is_taken_with_a_note_and_results_json_is_strict(write, tmp_path, capsys):
    path = write(tmp_path / "scores.json", scores_json({"BLEU": 50.0, "METEOR": None, "TER": 0.4}))
    js = tmp_path / "r.json"
    assert cli_main(["results", "webnlg", "--card", "gpt2.md", "--scores", f"all={path}",
                     "--md", str(tmp_path / "r.md"), "--json", str(js)]) == 0
    assert re.search(r"^note: .*scores\.json: no dataset recorded \(scored without --dataset\); "
                     "taken as webnlg's$", capsys.readouterr().err, re.MULTILINE)
    report = json.loads(js.read_text(), parse_constant=lambda name: pytest.fail(f"{name} in results.json"))
    assert report["this_run"]["all"] == {"BLEU": 50.0, "METEOR": None, "TER": 0.4}


def test_paper_rows_by_method_with_their_spread(make_run):
    # the E2E recipe's Table 3 rows: LoRA, the baselines (* copied from Li & Liang) and their ±
    values = {"BLEU": 0.683, "NIST": 8.6, "METEOR": 0.452, "ROUGE_L": 0.70, "CIDEr": 2.4}
    runs = [make_run("a", 110, dataset="e2e", method="adapter-h", params=11_090_000, all=values),
            make_run("b", 111, dataset="e2e", method="adapter-h", params=11_090_000,
                     all={**values, "BLEU": 0.685, "CIDEr": 2.42})]
    text, report, _ = runs_results("e2e", runs)
    lines = text.splitlines()
    assert lines[2] == "| GPT-2 M | AdapterH 11.09M | n=2: 110, 111 | 68.4±.1 | 8.60±.00 | 45.2±.0 | 70.0±.0 | 2.41±.01 |"
    assert lines[3:9] == ["| GPT-2 M (paper) | LoRA 0.35M | paper | 70.4 | 8.85 | 46.8 | 71.8 | 2.53 |",
                          "| GPT-2 M (paper) | FT* 354.92M | paper | 68.2 | 8.62 | 46.2 | 71.0 | 2.47 |",
                          "| GPT-2 M (paper) | AdapterL* 0.37M | paper | 66.3 | 8.41 | 45.0 | 69.8 | 2.40 |",
                          "| GPT-2 M (paper) | AdapterL* 11.09M | paper | 68.9 | 8.71 | 46.1 | 71.3 | 2.47 |",
                          "| GPT-2 M (paper) | AdapterH 11.09M | paper | 67.3±.6 | 8.50±.07 | 46.0±.2 | 70.7±.2 | 2.44±.01 |",
                          "| GPT-2 M (paper) | FT-Top2* 25.19M | paper | 68.1 | 8.59 | 46.0 | 70.8 | 2.41 |"]
    assert "GPT-2 L" not in text  # only our card's rows
    paper = report["rows"][5]
    assert (paper["label"], paper["copied"], paper["params"]) == ("AdapterH 11.09M", False, "11.09M")
    names = ("BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr")
    assert paper["spread"] == {"all": dict(zip(names, (0.6, 0.07, 0.2, 0.2, 0.01), strict=True))}


def test_seeds_of_one_row_must_hold_the_same_subsets(make_run, tmp_path, capsys):
    good = {"BLEU": 45.0, "METEOR": 0.38, "TER": 0.47}
    a = make_run("a", 110, dataset="webnlg", all=good, seen=good, unseen=good)
    b = make_run("b", 111, dataset="webnlg", all=good)
    out = ["--md", str(tmp_path / "r.md"), "--json", str(tmp_path / "r.json")]
    assert cli_main(["results", "webnlg", "--runs", str(a), str(b), *out]) == 2
    assert re.search(r"b/run\.json: subsets all; seed 110 of its row has all, seen, unseen\n$",
                     capsys.readouterr().err)


def test_plot_without_matplotlib_is_one_line(make_run, tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if the plot extra were not installed
    run = make_run("a", 110, all={"BLEU": 45.0, "METEOR": 0.38, "TER": 0.47})
    assert cli_main(["results", "dart", "--runs", str(run), "--md", str(tmp_path / "r.md"), "--json",
                     str(tmp_path / "r.json"), "--plot", str(tmp_path / "r.png")]) == 2
    assert capsys.readouterr().err == "nlg results: error: --plot needs matplotlib: pip install 'nlg[plot]'\n"
    assert not (tmp_path / "r.md").exists()


def test_seeds_scored_against_other_references_are_refused(make_run, write, tmp_path, capsys):
    good = {"BLEU": 45.0, "METEOR": 0.38, "TER": 0.47}
    a, b = make_run("a", 110, all=good), make_run("b", 111, all=good)
    write(b / "scores_all.json", scores_json(good, "dart", references_sha256="2" * 64))
    out = ["--md", str(tmp_path / "r.md"), "--json", str(tmp_path / "r.json")]
    assert cli_main(["results", "dart", "--runs", str(a), str(b), *out]) == 2
    assert re.search(r"b/scores_all\.json: scored against other references than .*a/scores_all\.json "
                     r"\(references_sha256 differs\): not seeds of one test set\n$", capsys.readouterr().err)


# ---- digits that keep every order (issue 29 case 11) -----------------------------------------

E2E_RUN = {"BLEU": 0.0251, "NIST": 0.0063, "METEOR": 0.05, "ROUGE_L": 0.1, "CIDEr": 0.01}
E2E_UNTRAINED = {"BLEU": 0.0252, "NIST": 0.0113, "METEOR": 0.05, "ROUGE_L": 0.1, "CIDEr": 0.01}


def _column(table: str, head: str, row_start: str) -> str:
    lines = table.splitlines()
    heads = [cell.strip() for cell in lines[0].strip("|").split("|")]
    row = next(line for line in lines if line.startswith(row_start))
    return [cell.strip() for cell in row.strip("|").split("|")][heads.index(head)]


def test_one_run_table_keeps_the_order_of_the_raw_values(write, tmp_path):
    run = {"all": str(write(tmp_path / "r.json", scores_json(E2E_RUN)))}
    untrained = {"all": str(write(tmp_path / "u.json", scores_json(E2E_UNTRAINED)))}
    text, report = results("e2e", "gpt2.md", run, untrained)
    # NIST .0063 < .0113 at 4 decimals already; BLEU 2.51 < 2.52 in percent
    assert _column(text, "NIST", "| this run") == "0.0063" and _column(text, "NIST", "| untrained") == "0.0113"
    assert _column(text, "BLEU", "| this run") == "2.51" and _column(text, "BLEU", "| untrained") == "2.52"
    close = {"all": str(write(tmp_path / "c.json", scores_json({**E2E_RUN, "BLEU": 0.025101, "NIST": 0.00631})))}
    text, report = results("e2e", "gpt2.md", run | {}, close)
    assert _column(text, "BLEU", "| this run") == "2.51" and _column(text, "BLEU", "| untrained") == "2.5101"
    assert _column(text, "NIST", "| this run") == "0.0063" and _column(text, "NIST", "| untrained") == "0.00631"
    assert report["untrained"]["all"]["NIST"] == 0.00631  # the JSON holds what the table shows
    # equal values stay equal, float noise is no difference
    text, _ = results("e2e", "gpt2.md", run, run)
    assert _column(text, "NIST", "| this run") == _column(text, "NIST", "| untrained") == "0.0063"


def test_runs_table_keeps_the_order_of_the_raw_values(make_run):
    """The adapter-h demo: NIST 0.0063 trained, 0.0113 untrained, both 0.01 at the paper's two
    decimals; every table (means, intervals, each seed) shows them apart."""
    runs = [make_run(f"s{seed}", seed, dataset="e2e", all={**E2E_RUN, "NIST": nist},
                     untrained={**E2E_UNTRAINED, "NIST": 0.0113},
                     selection={"criterion": "valid_loss", "metric": None, "chosen_step": 20,
                                "candidates": [{"step": 10, "value": 3.02001}, {"step": 20, "value": 3.02}]})
            for seed, nist in ((110, 0.0063), (111, 0.0064))]
    text, _, _ = runs_results("e2e", runs)
    main_table, _, rest = text.partition("\n\n")
    assert _column(main_table, "NIST", "| GPT-2 M | LoRA") == "0.0063±.0001"  # 4 decimals: the seeds need them
    assert _column(main_table, "NIST", "| GPT-2 M | untrained") == "0.0113±.0000"
    seeds = text[text.index("Each seed"):].split("\n", 2)[2]
    assert _column(seeds, "NIST", "| GPT-2 M | LoRA 0.39M | 110") == "0.0063"
    assert _column(seeds, "NIST", "| GPT-2 M | LoRA 0.39M | 111") == "0.0064"
    # the selection's candidate values keep their order too
    assert "valid_loss: step 20 (10: 3.02001, 20: 3.02)" in seeds


def test_untrained_seed_rows_carry_no_checkpoint_or_selection(make_run):
    """Issue 29 case 10: the untrained row is not the trained checkpoint's."""
    runs = [make_run(f"s{seed}", seed, all={"BLEU": 45.0, "METEOR": 0.38, "TER": 0.47},
                     untrained={"BLEU": 1.0, "METEOR": 0.1, "TER": 1.2}, checkpoint="lora/checkpoint-300",
                     selection={"criterion": "valid_loss", "metric": None, "chosen_step": 300,
                                "candidates": [{"step": 300, "value": 3.0}]})
            for seed in (110, 111)]
    text, report, _ = runs_results("dart", runs)
    seeds = text[text.index("Each seed"):]
    untrained = [line for line in seeds.splitlines() if "| untrained |" in line]
    assert len(untrained) == 2 and all("checkpoint-300" not in line and "valid_loss" not in line
                                       and "| none | none (not trained) |" in line for line in untrained)
    trained = [line for line in seeds.splitlines() if "| LoRA 0.39M |" in line]
    assert all("| lora/checkpoint-300 | valid_loss: step 300 (300: 3) |" in line for line in trained)
    row = next(r for r in report["rows"] if r["kind"] == "untrained")
    assert all(run["checkpoint"] is None and run["selection"] is None for run in row["runs"])


def test_another_papers_row_is_its_own_row_labelled_with_its_source() -> None:
    """The LoRA rerun another paper published sits beside the LoRA paper's row, not merged into it."""
    from nlg import datasets
    from nlg.results.tables import paper_rows

    labels = [row.label for row in paper_rows(datasets.get("e2e").recipe, ["gpt2.md"], ["all"])]
    assert "LoRA 0.35M" in labels and "LoRA 0.35M (FourierFT (Gao et al., ICML 2024): LoRA rerun)" in labels
    assert any(label.startswith("VeRA 0.098M (VeRA") for label in labels)
