"""nlg.metrics.e2e: E2E scoring as the official measure_scores.py does it, on its files.

The pinned E2E numbers were checked against a re-creation of the official script (its
measure_scores.py multi-reference path, the scoring core of its mteval-v13a-sig.pl run by Perl, its
pymteval.py, stock pycocoevalcap): they agree to 1e-14 or better, per instance too. Java (METEOR,
the PTB tokenizer) runs in one test here: the five metrics, twice, each in a fresh `nlg score`
process (with METEOR's full paraphrase table, then with the cached cut of it); the official CSV
files are scored without Java (BLEU, NIST). METEOR also starts in test_meteor.py, test_webnlg.py
and tests/test_compare.py, which share one JVM with the full table (tests/conftest.py).
"""

from __future__ import annotations

import json
import math
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import error_line, nlg

from nlg.files import InputError
from nlg.metrics import e2e
from nlg.metrics.java import find_java

REPO = Path(__file__).resolve().parents[2]
needs_java = pytest.mark.skipif(find_java() is None, reason="needs a Java runtime")


def e2e_files(write, tmp_path: Path, refs: list[list[str]], preds: list[str]) -> tuple[Path, Path]:
    ref = write(tmp_path / "ref.txt", "".join("\n".join(group) + "\n\n" for group in refs))
    return ref, write(tmp_path / "pred.txt", "".join(p + "\n" for p in preds))


# ----------------------------------------------------------------------------------------------
# Files, errors, output
# ----------------------------------------------------------------------------------------------


def test_read_references_formats(write, tmp_path):
    multi = write(tmp_path / "multi.txt", "a b\n c d \n\ne f\n\n\n")
    assert e2e.read_references(multi) == [["a b", "c d"], ["e f"]]
    no_trailing_blank = write(tmp_path / "nt.txt", "a\n\nb\nc")
    assert e2e.read_references(no_trailing_blank) == [["a"], ["b", "c"]]
    single = write(tmp_path / "single.txt", "a\nb\nc\n")  # no blank line: one reference per line
    assert e2e.read_references(single) == [["a"], ["b"], ["c"]]


@pytest.mark.parametrize("text, line", [("a\n\n\nb\n", 3), ("\na\n\nb\n", 1)])
def test_read_references_rejects_empty_instance(write, tmp_path, text, line):
    path = write(tmp_path / "ref.txt", text)
    with pytest.raises(InputError, match=rf"ref.txt:{line}: .*without references"):
        e2e.read_references(path)


def test_undecodable_bytes_name_file_and_line(write, tmp_path):
    ref = write(tmp_path / "ref.txt", "a\n\nb\n\n")
    pred = tmp_path / "pred.txt"
    pred.write_bytes(b"fine\nbad \xff byte\n")
    with pytest.raises(InputError, match=r"pred.txt:2: not valid UTF-8"):
        e2e.score_files(ref, pred, java=None)


def test_count_mismatch_names_both_files_and_counts(write, tmp_path, capsys):
    ref = write(tmp_path / "ref.txt", "a\nb\n\nc\n\nd\n\n")  # 3 instances
    with pytest.raises(
        InputError, match=r"pred.txt has 2 predictions but .*ref.txt has 3 instances"
    ):
        e2e.score_files(ref, write(tmp_path / "pred.txt", "a\nc\n"), java=None)
    with pytest.raises(InputError, match=r"has 4 predictions .* ends with 1 extra empty line"):
        e2e.score_files(ref, write(tmp_path / "pred.txt", "a\nc\nd\n\n"), java=None)
    # through the CLI: one line on stderr, exit code 2
    from nlg.cli import main

    assert main(["score", str(ref), str(write(tmp_path / "p1.txt", "a\n"))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nlg score: error: ") and "p1.txt has 1 predictions" in err and "3 instances" in err


def test_format_scores_layout():
    scores = {
        "BLEU": 0.63349,
        "NIST": 8.29944,
        "METEOR": None,
        "ROUGE_L": 0.67627,
        "CIDEr": 2.04994,
    }
    assert e2e.format_scores(scores) == (
        "SCORES:\n==============\nBLEU: 0.6335\nNIST: 8.2994\nMETEOR: n/a\nROUGE_L: 0.6763\nCIDEr: 2.0499"
    )


def _run_score(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """`nlg score ARGS` in a fresh interpreter; reports whether torch got imported."""
    code = (
        "import sys\nfrom nlg.cli import main\nrc = main(['score', *sys.argv[1:]])\n"
        "print('torch imported' if 'torch' in sys.modules else 'torch not imported', file=sys.stderr)\n"
        "sys.exit(rc)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=REPO
    )


def test_without_java_bleu_nist_still_print(write, tmp_path):
    ref = write(
        tmp_path / "ref.txt", "the cat sat on the mat\na cat is on the mat\n\nhello world\n\n"
    )
    pred = write(tmp_path / "pred.txt", "the cat is on the mat\nhello\n")
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    env = {**os.environ, "PATH": str(empty_bin)}  # no java anywhere on PATH

    done = _run_score([str(ref), str(pred), "--json", str(tmp_path / "s.json")], env)
    assert done.returncode == 0, done.stderr
    bleu = math.exp(1 - 8 / 7) * (3 / 4 * 2 / 3) ** 0.25  # the hand-checked case above
    assert done.stdout.splitlines()[:3] == ["SCORES:", "==============", f"BLEU: {bleu:.4f}"]
    assert done.stdout.splitlines()[4:7] == ["METEOR: n/a", "ROUGE_L: n/a", "CIDEr: n/a"]
    assert "Java runtime" in done.stderr and "apt-get install default-jre-headless" in done.stderr
    assert "torch not imported" in done.stderr
    saved = json.loads((tmp_path / "s.json").read_text())
    assert saved["BLEU"] == pytest.approx(bleu) and saved["METEOR"] is None

    strict = _run_score([str(ref), str(pred), "--strict"], env)
    assert strict.returncode == 1
    assert (
        strict.stdout == ""
        and "error:" in strict.stderr
        and "default-jre-headless" in strict.stderr
    )


# ----------------------------------------------------------------------------------------------
# All five metrics (Java): the one test here that starts METEOR. It starts its own (not the
# session's, tests/conftest.py shared_meteor): what it checks is nlg score's cold start with the
# full table, the cut it caches, and the warm start with that cut
# ----------------------------------------------------------------------------------------------


@needs_java
def test_e2e_all_five_metrics_match_official(write, e2e_test, tmp_path):
    refs, preds, _ = e2e_test
    # two more instances whose outputs are empty after tokenisation (empty; only punctuation):
    # they must score 0, not crash METEOR or shift the PTB tokenizer's lines
    refs = refs + [["The Eagle is a pub .", "A pub , The Eagle ."], ["Aroma is cheap ."]]
    preds = preds + ["", ". ,"]
    ref, pred = e2e_files(write, tmp_path, refs, preds)
    env = {**os.environ, "NLG_CACHE_DIR": str(tmp_path / "cache")}

    outputs = []
    for run in ("cold", "warm"):  # METEOR's full paraphrase table, then the cached cut of it
        out_json, out_rows = tmp_path / f"{run}.json", tmp_path / f"{run}.jsonl"
        args = [str(ref), str(pred), "--json", str(out_json), "--per-instance", str(out_rows)]
        done = _run_score(args, env)
        assert done.returncode == 0, done.stderr
        assert "torch not imported" in done.stderr
        assert done.stdout == (
            "SCORES:\n==============\nBLEU: 0.5845\nNIST: 7.8768\nMETEOR: 0.4044\nROUGE_L: 0.6396\n"
            "CIDEr: 1.9925\n\n"
        )
        assert ("note: cached METEOR's paraphrase table" in done.stderr) == (run == "cold")
        outputs.append((out_json.read_text(), out_rows.read_text()))
    assert outputs[0] == outputs[1]  # every score of every instance, to the last digit
    assert len(list((tmp_path / "cache").glob("meteor-paraphrase-en-*.gz"))) == 1

    official = {  # the official pipeline's unrounded values on these files
        "BLEU": 0.58447110389851864,
        "NIST": 7.8767641738800744,
        "METEOR": 0.40438779284350623,
        "ROUGE_L": 0.6396479784807168,
        "CIDEr": 1.9924632949075767,
    }
    scores = json.loads(outputs[0][0])
    assert scores.pop("scored")["suite"] == "e2e"
    assert scores == pytest.approx(official, rel=1e-12)
    rows = [json.loads(line) for line in outputs[0][1].splitlines()]
    assert len(rows) == 632 and [rows[0]["line"], rows[-1]["line"]] == [1, 632]
    assert rows[0]["prediction"] == preds[0] and rows[0]["references"] == refs[0]
    # mteval-v13a-sig.pl's segment scores for the first instance
    assert (rows[0]["BLEU"], rows[0]["NIST"]) == pytest.approx(
        (0.9671682101338347, 13.591903669849097), rel=1e-12
    )
    # ROUGE_L and CIDEr are means of their sentence scores; METEOR is not (it sums statistics)
    for name in ("ROUGE_L", "CIDEr"):
        assert statistics.fmean(r[name] for r in rows) == pytest.approx(official[name], rel=1e-12)
    assert all(0 <= r["METEOR"] <= 1 for r in rows)
    for row in rows[-2:]:
        assert (row["METEOR"], row["ROUGE_L"], row["CIDEr"]) == (0.0, 0.0, 0.0)
    assert (rows[-2]["BLEU"], rows[-2]["NIST"]) == (0.0, 0.0)


def test_eval_measure_scores_wrapper_runs_from_a_checkout(write, tmp_path):
    """The official-style entry point works as a plain script (no Java needed for this check)."""
    ref = write(tmp_path / "ref.txt", "a b c d\n\n")
    pred = write(tmp_path / "pred.txt", "a b c d\ne\n")
    done = subprocess.run(
        [sys.executable, str(REPO / "eval" / "measure_scores.py"), str(ref), str(pred), "-p"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert "2 predictions" in done.stderr and "1 instances" in done.stderr


# ----------------------------------------------------------------------------------------------
# The official CSV/TSV files
# ----------------------------------------------------------------------------------------------


def official_template(mr: str) -> str:
    """A crude realisation of an official MR (`name[Blue Spice], eatType[coffee shop], ...`)."""
    fields = dict(re.findall(r"(\w[\w ]*)\[(.*?)\]", mr))
    text = f"{fields.get('name', 'It')} is a {fields.get('eatType', 'place')}"
    return (
        text
        + "".join(
            f", {key} {value}" for key, value in fields.items() if key not in ("name", "eatType")
        )
        + "."
    )


@pytest.fixture(scope="module")
def official_test(shared_dir) -> tuple[Path, list[tuple[int, str, str]]]:
    csv_path = shared_dir / "data" / "e2e-official" / "testset_w_refs.csv"
    return csv_path, e2e.read_table(csv_path, e2e.HEADER_REF)


def test_official_csv_references_group_consecutive_mrs(write, official_test, tmp_path):
    csv_path, rows = official_test
    assert len(rows) == 4693 and rows[0][0] == 2  # line 1 is the header
    groups = e2e.consecutive_groups(rows)
    assert len(groups) == 630
    outputs = [official_template(group[0][1]) for group in groups]
    pred = write(tmp_path / "outputs.txt", "".join(o + "\n" for o in outputs))
    # the same references in the text format: identical statistics, instance by instance
    text_ref, _ = e2e_files(write, tmp_path, [[r for _, _, r in g] for g in groups], outputs)
    from_csv = e2e.score_report(csv_path, pred, java=None, per_instance=True)
    from_text = e2e.score_report(text_ref, pred, java=None, per_instance=True)
    assert from_csv.scores == from_text.scores and from_csv.per_instance == from_text.per_instance
    assert (from_csv.scores["BLEU"], from_csv.scores["NIST"]) == pytest.approx(
        (0.3670333855064418, 5.958800810015144), rel=1e-12
    )


def test_csv_system_output_is_matched_to_reference_mrs(write, official_test, tmp_path):
    csv_path, rows = official_test
    groups = e2e.consecutive_groups(rows)
    mrs = [group[0][1] for group in groups]
    ordered = write(tmp_path / "outputs.txt", "".join(official_template(mr) + "\n" for mr in mrs))
    shuffled = list(reversed(mrs))
    table = "mr,output\n" + "".join(f'"{mr}","{official_template(mr)}"\n' for mr in shuffled)
    outputs_csv = write(tmp_path / "outputs.csv", table)
    references, predictions = e2e.read_files(csv_path, outputs_csv)
    assert predictions[0] == official_template(mrs[-1])
    assert references[0] == [r for _, _, r in groups[-1]]
    # the same instances in reverse order: the same scores (up to the order of float sums)
    reordered = e2e.score_files(csv_path, outputs_csv, java=None)
    in_order = e2e.score_files(csv_path, ordered, java=None)
    assert [reordered["BLEU"], reordered["NIST"]] == pytest.approx(
        [in_order["BLEU"], in_order["NIST"]], rel=1e-12
    )
    unknown = write(tmp_path / "unknown.csv", table + '"name[Nowhere]","Nowhere."\n')
    with pytest.raises(
        InputError, match=r"unknown.csv:632: no reference in .* has the MR 'name\[Nowhere\]'"
    ):
        e2e.read_files(csv_path, unknown)


def test_table_reading_rules(write, tmp_path):
    # byte-order mark, mis-encoded pound/e-acute fixed, empty lines dropped, TSV by its tab,
    # headers matched case-insensitively at the start of a field, columns in any order
    tsv = write(tmp_path / "refs.TSV", "\ufeffReferences\tMR\n\nCafÃ© at Â£20\tm1\nÅ\tm1\nx\tm2\n")
    assert e2e.read_table(tsv, e2e.HEADER_REF) == [
        (3, "m1", "Café at £20"),
        (4, "m1", "Å"),
        (5, "m2", "x"),
    ]
    assert e2e.read_references(tsv) == [["Café at £20", "Å"], ["x"]]
    # no header: exactly two columns, MR first (the official script means this but crashes)
    bare = write(tmp_path / "bare.csv", "name[A],A is here.\nname[A],Here is A.\n")
    assert e2e.read_references(bare) == [["A is here.", "Here is A."]]
    assert e2e.is_table(bare) and not e2e.is_table(tmp_path / "refs.txt")


@pytest.mark.parametrize(
    "text, message",
    [
        ("mr,ref\na,b\nc,d,e\n", r"bad.csv:3: 3 columns, but line 1 has 2"),
        ("a,b,c\nd,e,f\n", r"bad.csv:1: no usable header: .* exactly 2 columns \(this row has 3\)"),
        ("mr,ref,reference\na,b,c\n", r"bad.csv:1: no usable header: .*columns \[1, 2\]"),
        ('mr,ref\n"a,b\n', r"bad.csv:2: not valid CSV"),
        ("\n\n", r"bad.csv: no rows"),
    ],
)
def test_bad_tables_name_file_and_line(write, tmp_path, text, message):
    with pytest.raises(InputError, match=message):
        e2e.read_references(write(tmp_path / "bad.csv", text))


def test_a_system_csv_with_missing_or_repeated_mrs_is_refused(tmp_path, capsys, monkeypatch):
    from nlg.metrics import score_files

    monkeypatch.setenv("PATH", str(tmp_path))  # no Java: BLEU and NIST are enough here
    mrs = [f"name[Place {k}], eatType[pub], area[riverside]" for k in range(8)]
    rows = [(mr, f"Place {k} is a pub by the river{'side' * j}.") for k, mr in enumerate(mrs) for j in range(2)]
    refs = tmp_path / "refs.csv"
    refs.write_text('"mr","ref"\n' + "".join(f'"{mr}","{ref}"\n' for mr, ref in rows))

    def system(name: str, chosen: list[int]) -> Path:
        path = tmp_path / name
        path.write_text("mr,output\n" + "".join(f'"{mrs[k]}","Place {k} is a pub by the river."\n' for k in chosen))
        return path

    complete = system("complete.csv", list(range(7, -1, -1)))  # any order
    assert nlg("score", refs, complete, "--json", tmp_path / "s.json") == 0
    assert json.loads((tmp_path / "s.json").read_text())["BLEU"] > 0.5
    capsys.readouterr()
    three = system("three.csv", [0, 1, 2])
    assert nlg("score", refs, three) == 2
    assert error_line(capsys) == (f"nlg score: error: {three}: no output for 5 of the 8 MRs of {refs}, the first "
                                  f"'{mrs[3]}' ({refs}:8); to score a subset, give references holding only its MRs\n")
    twice = system("twice.csv", [*range(8), 5])
    assert nlg("score", refs, twice) == 2
    assert error_line(capsys) == (f"nlg score: error: {twice}:10: the MR '{mrs[5]}' has an output at line 7 "
                                  "already (a system output holds each MR once)\n")
    with pytest.raises(InputError, match=r"three\.csv: no output for 5 of the 8 MRs"):
        score_files("e2e", refs, three)
    # a subset on purpose: references holding only its MRs
    subset = tmp_path / "subset.csv"
    subset.write_text('"mr","ref"\n' + "".join(f'"{mr}","{ref}"\n' for mr, ref in rows[:6]))
    assert nlg("score", subset, three) == 0
