"""nlg compare: bootstrap resamples equal `nlg score` on the resampled files, the p-value's
definition at its ends (a system against itself, against a shuffled copy), seeds, refusals."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from nlg import compare
from nlg.cli import main as nlg_main
from nlg.metrics.java import find_java
from nlg.metrics.resample import MeteorResampler, resamplers

REPO = Path(__file__).resolve().parents[1]
needs_java = pytest.mark.skipif(find_java() is None, reason="needs a Java runtime")
# rows of instance indices: repeats, an instance missing, another order
ROWS = np.array([[0, 0, 3, 5, 5, 5, 7, 1, 2, 9, 11, 4], [11, 10, 9, 8, 7, 6, 6, 6, 2, 2, 0, 1]])
EXACT = {"BLEU", "METEOR", "ROUGE_L", "chrF++", "TER"}  # bit for bit; NIST, CIDEr to 1e-12


def nlg(*args: str) -> int:
    return nlg_main([str(a) for a in args])


def e2e_corpus(e2e_raw_dir: Path, n: int) -> tuple[list[list[str]], list[str]]:
    """The first n contexts of the E2E test set, and a crude system output for each."""
    groups: dict[str, list[str]] = {}
    for line in (e2e_raw_dir / "test.txt").read_text(encoding="utf-8").splitlines():
        mr, ref = line.split("||", 1)
        groups.setdefault(mr.strip(), []).append(ref.strip())
    items = list(groups.items())[:n]
    outputs = [mr.split(" | ")[0].split(" : ")[1] + " is a pub near the river ." for mr, _ in items]
    outputs[3] = ""  # an empty output
    outputs[5] = items[5][1][0]  # a perfect one: METEOR leaves its chunk out of corpus sums
    return [refs for _, refs in items], outputs


def webnlg_corpus(webnlg_xml_dir: Path, n: int) -> tuple[list[list[str]], list[str]]:
    """The first n entries of the WebNLG 2017 test set (3 references, "" where fewer), with a
    `|||` inside one reference (issue 23 case 9) and an instance without references."""
    root = ET.parse(webnlg_xml_dir / "test" / "testdata_with_lex.xml").getroot()
    refs, hyps = [], []
    for entry in list(root.iter("entry"))[:n]:
        texts = [lex.text or "" for lex in entry.iter("lex")][:3]
        refs.append(texts + [""] * (3 - len(texts)))
        triples = [t.text.split(" | ") for t in entry.iter("mtriple")]
        hyps.append(" ".join(f"{s.replace('_', ' ')} {p} {o.replace('_', ' ')}." for s, p, o in triples))
    refs[2][0] = refs[2][0].replace(" ", " ||| ", 1)
    refs[5] = ["", "", ""]
    hyps[4] = refs[4][0]  # a perfect output
    return refs, hyps


def write_e2e(folder: Path, refs: list[list[str]], hyps: list[str]) -> tuple[Path, Path]:
    folder.mkdir()
    (folder / "ref.txt").write_text("".join("\n".join(r) + "\n\n" for r in refs), encoding="utf-8")
    (folder / "pred.txt").write_text("".join(h + "\n" for h in hyps), encoding="utf-8")
    return folder / "ref.txt", folder / "pred.txt"


def write_webnlg(folder: Path, refs: list[list[str]], hyps: list[str]) -> tuple[Path, Path]:
    folder.mkdir()
    for k in range(len(refs[0])):
        (folder / f"reference{k}").write_text("".join(r[k] + "\n" for r in refs), encoding="utf-8")
    (folder / "hypothesis").write_text("".join(h + "\n" for h in hyps), encoding="utf-8")
    return folder, folder / "hypothesis"


def assert_equal_to_nlg_score(tmp_path, suite, refs, hyps, write, options, score_args):
    """The resamplers' values of ROWS and of the full set equal `nlg score` on those files, with
    METEOR's full paraphrase table on both sides (`cache_dir=None`, `--no_cache`: the cut of the
    table is test_e2e's). Both use the session's METEOR JVM (tests/conftest.py shared_meteor)."""
    with resamplers(suite, refs, [hyps], cache_dir=None, **options) as made:
        assert not made.missing
        values = made.values(ROWS)[0]
        full = made.values(np.arange(len(refs))[None, :])[0]
        # METEOR's resample sums equal the jar's own sums of the instances' lines
        meteor = next(r for r in made.systems[0] if isinstance(r, MeteorResampler))
        many = np.random.default_rng(3).integers(0, len(refs), (30, len(refs)))
        summed = meteor.values(many)["METEOR"]
        meteor.counts = False
        assert list(meteor.values(many)["METEOR"]) == list(summed)
    for k, row in enumerate([*ROWS, np.arange(len(refs))]):
        got = {name: v[k] for name, v in values.items()} if k < len(ROWS) else {
            name: v[0] for name, v in full.items()
        }
        ref, pred = write(tmp_path / f"resample{k}", [refs[i] for i in row], [hyps[i] for i in row])
        assert nlg("score", ref, pred, "--no_cache", "--json", tmp_path / f"{k}.json", *score_args) == 0
        expected = json.loads((tmp_path / f"{k}.json").read_text())
        assert expected.pop("scored")["instances"] == len(row)
        assert set(got) == set(expected)
        for name, value in expected.items():
            if name in EXACT:
                assert got[name] == value, (k, name)
            else:
                assert got[name] == pytest.approx(value, rel=1e-12, abs=1e-12), (k, name)


@needs_java
@pytest.mark.slow
def test_e2e_resamples_equal_nlg_score_on_the_resampled_files(tmp_path, e2e_raw_dir, shared_meteor):
    refs, hyps = e2e_corpus(e2e_raw_dir, 12)
    assert_equal_to_nlg_score(tmp_path, "e2e", refs, hyps, write_e2e, {}, [])


def test_e2e_pymteval_resamples_equal_nlg_score(tmp_path, e2e_raw_dir):
    refs, hyps = e2e_corpus(e2e_raw_dir, 12)
    with resamplers("e2e", refs, [hyps], java=None, pymteval=True) as made:
        values = made.values(ROWS)[0]
    for k, row in enumerate(ROWS):
        ref, pred = write_e2e(tmp_path / f"r{k}", [refs[i] for i in row], [hyps[i] for i in row])
        from nlg.metrics import e2e

        expected = e2e.score(*e2e.read_files(ref, pred), java=None, pymteval=True).scores
        assert values["BLEU"][k] == expected["BLEU"]
        assert values["NIST"][k] == pytest.approx(expected["NIST"], rel=1e-12)


@needs_java
@pytest.mark.slow
def test_webnlg_resamples_equal_nlg_score_on_the_resampled_files(tmp_path, webnlg_xml_dir, shared_meteor):
    refs, hyps = webnlg_corpus(webnlg_xml_dir, 12)
    assert_equal_to_nlg_score(tmp_path, "webnlg", refs, hyps, write_webnlg, {}, [])


# ---------------------------------------------------------------------------------------------
# The p-value and the intervals
# ---------------------------------------------------------------------------------------------


def test_p_value_and_interval_by_hand():
    deltas = np.array([0.1, 0.3, -0.1, 0.5])  # mean 0.2; centred: -0.1, 0.1, -0.3, 0.3
    assert compare.p_value(0.25, deltas) == (1 + 2) / 5
    assert compare.p_value(0.0, np.zeros(9)) == 1.0
    assert compare.interval(np.arange(41.0)) == pytest.approx((1.0, 39.0), abs=1e-12)


def toy_webnlg(tmp_path, webnlg_xml_dir, n=40):
    refs, hyps = webnlg_corpus(webnlg_xml_dir, n)
    ref, pred = write_webnlg(tmp_path / "data", refs, hyps)
    shuffled = tmp_path / "shuffled"
    order = np.random.default_rng(0).permutation(n)
    shuffled.write_text("".join(hyps[i] + "\n" for i in order), encoding="utf-8")
    return ref, pred, shuffled


def test_a_system_against_itself_has_p_1_and_against_its_shuffled_copy_a_small_p(
    tmp_path, webnlg_xml_dir
):
    ref, pred, shuffled = toy_webnlg(tmp_path, webnlg_xml_dir)
    metrics = ["-m", "bleu,chrf++,ter"]  # no Java needed
    assert nlg("compare", ref, pred, pred, *metrics, "--resamples", 200, "--json", tmp_path / "self.json") == 0
    same = json.loads((tmp_path / "self.json").read_text())["comparisons"][0]["metrics"]
    assert set(same) == {"BLEU", "chrF++", "TER"}
    for entry in same.values():
        assert entry["difference"] == {"value": 0.0, "low": 0.0, "high": 0.0, "p": 1.0}
        assert entry["systems"][0] == entry["systems"][1]
    assert nlg("compare", ref, pred, shuffled, *metrics, "--resamples", 200, "--json", tmp_path / "shuf.json") == 0
    other = json.loads((tmp_path / "shuf.json").read_text())["comparisons"][0]["metrics"]
    for name, entry in other.items():
        assert entry["difference"]["p"] == 1 / 201, name  # no resample as extreme as the truth
        low, high = entry["difference"]["low"], entry["difference"]["high"]
        assert not low <= 0 <= high, name


def test_seeded_runs_repeat_exactly(tmp_path, webnlg_xml_dir):
    ref, pred, shuffled = toy_webnlg(tmp_path, webnlg_xml_dir)
    outputs = []
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        out = tmp_path / f"{name}.json"
        assert nlg("compare", ref, pred, shuffled, "-m", "bleu,chrf++", "--resamples", 50,
                   "--seed", seed, "--json", out) == 0
        outputs.append(json.loads(out.read_text())["comparisons"])
    assert outputs[0] == outputs[1]
    assert outputs[0] != outputs[2]


def test_one_system_alone(tmp_path, webnlg_xml_dir, capsys):
    ref, pred, _ = toy_webnlg(tmp_path, webnlg_xml_dir)
    assert nlg("compare", ref, pred, "-m", "chrf++", "--resamples", 20) == 0
    out = capsys.readouterr().out
    assert "chrF++" in out and "B - A" not in out


# ---------------------------------------------------------------------------------------------
# Run directories and refusals
# ---------------------------------------------------------------------------------------------


def make_run(folder: Path, refs, hyps, record: dict | None = None) -> Path:
    ref, pred = write_webnlg(folder, refs, hyps)
    record = record or {
        "dataset": "webnlg",
        "subsets": {"all": {"scores": "scores.json", "references": ".", "predictions": "hypothesis"}},
    }
    (folder / "run.json").write_text(json.dumps(record), encoding="utf-8")
    return folder


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nlg", "compare", *map(str, args)],
        capture_output=True, text=True, cwd=REPO,
    )


def one_line_error(done: subprocess.CompletedProcess, *names: str) -> str:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nlg compare: error: "), done.stderr
    for name in names:
        assert str(name) in lines[0]
    return lines[0]


def test_two_run_directories_subset_by_subset(tmp_path, webnlg_xml_dir):
    refs, hyps = webnlg_corpus(webnlg_xml_dir, 20)
    a = make_run(tmp_path / "a", refs, hyps)
    b = make_run(tmp_path / "b", refs, hyps[::-1])
    assert nlg("compare", a, b, "-m", "bleu", "--resamples", 30, "--json", tmp_path / "o.json") == 0
    comparison = json.loads((tmp_path / "o.json").read_text())["comparisons"][0]
    assert comparison["subset"] == "all"
    assert comparison["systems"] == [str(a / "hypothesis"), str(b / "hypothesis")]


def test_a_demo_run_against_its_untrained_model(tmp_path, webnlg_xml_dir, capsys):
    refs, hyps = webnlg_corpus(webnlg_xml_dir, 20)
    files = {"references": ".", "predictions": "hypothesis"}
    record = {"dataset": "webnlg", "subsets": {"all": files},
              "untrained": {"all": {"references": ".", "predictions": "untrained.txt"}}}
    run = make_run(tmp_path / "demo", refs, hyps, record)
    (run / "untrained.txt").write_text("".join("x\n" for _ in hyps), encoding="utf-8")
    assert nlg("compare", run, "-m", "bleu,chrf++", "--resamples", 30, "--json", tmp_path / "o.json") == 0
    comparison = json.loads((tmp_path / "o.json").read_text())["comparisons"][0]
    assert comparison["systems"] == [str(run / "untrained.txt"), str(run / "hypothesis")]
    assert comparison["metrics"]["chrF++"]["difference"]["value"] > 0
    record["untrained"] = None
    (run / "run.json").write_text(json.dumps(record), encoding="utf-8")
    one_line_error(run_cli(run), run / "run.json", "untrained")


def test_refusals(tmp_path, webnlg_xml_dir):
    refs, hyps = webnlg_corpus(webnlg_xml_dir, 10)
    ref, pred = write_webnlg(tmp_path / "data", refs, hyps)
    short = tmp_path / "short"
    short.write_text("".join(h + "\n" for h in hyps[:-1]), encoding="utf-8")
    one_line_error(run_cli(ref, pred, short, "-m", "bleu"), short)

    a = make_run(tmp_path / "a", refs, hyps)
    other = [list(r) for r in refs]
    other[4][0] = "Another reference."
    b = make_run(tmp_path / "b", other, hyps)
    one_line_error(run_cli(a, b, "-m", "bleu"), a, b)  # different references

    (b / "run.json").unlink()
    one_line_error(run_cli(a, b), b / "run.json")

    record = {"dataset": "webnlg", "subsets": {"all": {"references": ".", "predictions": "gone.txt"}}}
    (b / "run.json").write_text(json.dumps(record), encoding="utf-8")
    one_line_error(run_cli(a, b), b / "run.json", "gone.txt")

    (b / "run.json").write_text("{not json", encoding="utf-8")
    one_line_error(run_cli(a, b), b / "run.json")

    one_line_error(run_cli(ref, pred, "--resamples", 0), "--resamples")
    one_line_error(run_cli(ref, pred, pred, "--json", pred), pred)  # never over an input


def test_run_directories_are_compared_with_the_options_they_were_scored_with(tmp_path, webnlg_xml_dir):
    """Comparing runs without scoring flags takes the ones their scores files record (here -m
    bleu,ter; the E2E recipe's -p changes NIST alike), so each system's score is its scores file's."""
    refs, hyps = webnlg_corpus(webnlg_xml_dir, 20)
    a = make_run(tmp_path / "a", refs, hyps)
    b = make_run(tmp_path / "b", refs, hyps[::-1])
    for run in (a, b):
        assert nlg("score", run, run / "hypothesis", "-m", "bleu,ter", "--json", run / "scores.json") == 0
    assert nlg("compare", a, b, "--resamples", 20, "--json", tmp_path / "o.json") == 0
    comparison = json.loads((tmp_path / "o.json").read_text())["comparisons"][0]
    assert set(comparison["metrics"]) == {"BLEU", "TER"}
    for k, run in enumerate((a, b)):
        scores = json.loads((run / "scores.json").read_text())
        assert comparison["metrics"]["BLEU"]["systems"][k]["score"] == scores["BLEU"]
    # runs scored with other options cannot both be matched
    assert nlg("score", b, b / "hypothesis", "-m", "bleu", "--json", b / "scores.json") == 0
    one_line_error(run_cli(a, b), a / "scores.json", b / "scores.json", "scored with")
    assert nlg("compare", a, b, "-m", "bleu", "--resamples", 20) == 0  # unless the options are given


def test_the_most_basic_difference_is_named_first(tmp_path, webnlg_xml_dir):
    """Issue 29 case 12: a WebNLG run against an E2E run is refused for its dataset, not for
    the scoring options its scores files record; then the number of test instances; then the
    options."""
    refs, hyps = webnlg_corpus(webnlg_xml_dir, 20)
    a = make_run(tmp_path / "a", refs, hyps)
    b = make_run(tmp_path / "b", refs, hyps[::-1])
    assert nlg("score", a, a / "hypothesis", "-m", "bleu,ter", "--json", a / "scores.json") == 0
    assert nlg("score", b, b / "hypothesis", "-m", "bleu", "--json", b / "scores.json") == 0
    record = json.loads((b / "run.json").read_text())
    (b / "run.json").write_text(json.dumps({**record, "dataset": "e2e"}), encoding="utf-8")
    error = one_line_error(run_cli(a, b), a / "run.json", b / "run.json", "'webnlg'", "'e2e'")
    assert "scored with" not in error and "suites" in error
    # one dataset, another test set (and other options): the instance count first
    short = make_run(tmp_path / "short", refs[:10], hyps[:10])
    assert nlg("score", short, short / "hypothesis", "-m", "bleu", "--json", short / "scores.json") == 0
    error = one_line_error(run_cli(a, short), "20 instances", "10", "not one test set")
    assert "scored with" not in error
    # the same test set scored with other options: the options
    (b / "run.json").write_text(json.dumps(record), encoding="utf-8")
    one_line_error(run_cli(a, b), "scored with")


def test_printed_scores_keep_their_order():
    """Two different scores, or a difference that is not 0, are never printed alike."""
    from nlg.compare import format_comparison

    def entry(a, b):
        return {"systems": [{"score": a, "low": a, "high": a}, {"score": b, "low": b, "high": b}],
                "difference": {"value": b - a, "low": b - a, "high": b - a, "p": 0.5}}

    result = {"subset": None, "instances": 3, "systems": ["a", "b"], "suite": "e2e", "unavailable": None,
              "metrics": {"NIST": entry(0.00631, 0.00634), "BLEU": entry(0.5, 0.6)}}
    text = format_comparison(result, 10, 1)
    nist = next(line for line in text.splitlines() if line.startswith("NIST"))
    assert "0.00631 [" in nist and "0.00634 [" in nist and "0.00003 [" in nist
    bleu = next(line for line in text.splitlines() if line.startswith("BLEU"))
    assert "0.5000 [" in bleu and "0.1000 [" in bleu  # the usual 4 where nothing collides
