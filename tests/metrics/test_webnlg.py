"""nlg.metrics.webnlg: GenerationEval's numbers on multi-reference files from the WebNLG dev set.

The expected values are GenerationEval's (its eval.py, chrF.py, multi-bleu-detok.perl, pyter3 0.3
and NLTK 3.5 with Punkt's English data, METEOR 1.5), run outside this repository: METEOR, chrF++
and TER on the same files without their final newline (with it, its METEOR gives -1 and its TER
(sum + 1)/(N + 1): 0.49129312731197006 for the first system), BLEU on the files as written here
(without the final newline Perl drops each file's last character: 28.82 for the template
system). BLEU is compared at the two decimals GenerationEval reports; ours agree to all digits.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from helpers import error_line, nlg, snapshot

from nlg.files import InputError
from nlg.metrics import score_files, webnlg
from nlg.metrics.java import find_java
from nlg.metrics.treebank import punkt_sentences

REPO = Path(__file__).resolve().parents[2]
NUM_REFS = 6
needs_java = pytest.mark.skipif(find_java() is None, reason="needs a Java runtime")


def paper_tokenize(text: str) -> str:
    """The LoRA paper's decode with --tokenize --lower."""
    return " ".join(" ".join(re.split(r"(\W)", text.lower())).split())


def template(triples: list[str]) -> str:
    """A crude realisation: `subject property object.` per triple."""
    parts = [[x.strip().replace("_", " ").strip('"') for x in t.split("|")] for t in triples]
    return " ".join(f"{s} {p} {o}." for s, p, o in parts)


def write_system(folder: Path, instances: list[tuple[str, list[str]]]) -> Path:
    """reference0..5 (an empty line where an instance has fewer references) and hypothesis,
    every line ended by a newline as the paper's decoder writes them."""
    folder.mkdir()
    for i in range(NUM_REFS):
        lines = [refs[i] if i < len(refs) else "" for _, refs in instances]
        (folder / f"reference{i}").write_text(
            "".join(line + "\n" for line in lines), encoding="utf-8"
        )
    (folder / "hypothesis").write_text("".join(h + "\n" for h, _ in instances), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def dev_entries(shared_dir) -> list[tuple[list[str], list[str]]]:
    """(lexicalisations, triples) of the 872 dev entries, in sorted file order."""
    files = sorted((shared_dir / "data" / "webnlg-2017" / "dev").glob("*triples/*.xml"))
    return [
        ([lex.text or "" for lex in e.iter("lex")], [t.text for t in e.iter("mtriple")])
        for f in files
        for e in ET.parse(f).getroot().iter("entry")
    ]


@needs_java
def test_first_reference_as_system_tokenised(dev_entries, tmp_path, shared_meteor):
    """The paper's case: decoded text and references tokenised (--tokenize --lower); the first
    text of each entry is the system, the others (up to 6) the references."""
    instances = [
        (paper_tokenize(lexes[0]), [paper_tokenize(x) for x in lexes[1 : NUM_REFS + 1]])
        for lexes, _ in dev_entries
    ]
    folder = write_system(tmp_path / "first", instances)
    report = score_files("webnlg", folder, folder / "hypothesis", cache_dir=None, per_instance=True)
    assert f"{report.scores['BLEU']:.2f}" == "45.94"
    assert report.scores["METEOR"] == pytest.approx(0.41617481436336623, abs=1e-4)
    assert report.scores["chrF++"] == pytest.approx(0.701019103855764, abs=1e-4)
    assert report.scores["TER"] == pytest.approx(0.49070974787081406, abs=1e-4)
    assert len(report.per_instance) == 872 and report.per_instance[0]["line"] == 1
    single = [row for row in report.per_instance if not any(row["references"])]
    assert single and all(row["TER"] == 1.0 and row["chrF++"] is None for row in single)


def test_template_system_raw_text(dev_entries, tmp_path, shared_meteor):
    """Untokenised text, a template system against all (up to 6) texts of each entry. BLEU and
    chrF++ do not tokenise; METEOR and TER need Punkt (where it is installed) to be exact."""
    instances = [(template(triples), lexes[:NUM_REFS]) for lexes, triples in dev_entries]
    folder = write_system(tmp_path / "template", instances)
    exact = punkt_sentences() is not None and find_java() is not None
    metrics = "bleu,meteor,chrf++,ter" if exact else "bleu,chrf++"
    report = score_files("webnlg", folder, folder / "hypothesis", metrics=metrics, cache_dir=None)
    assert f"{report.scores['BLEU']:.2f}" == "28.83"
    assert report.scores["chrF++"] == pytest.approx(0.5459470620443019, abs=1e-4)
    if exact:
        assert report.scores["METEOR"] == pytest.approx(0.3211433084172761, abs=1e-4)
        assert report.scores["TER"] == pytest.approx(0.6236751434940255, abs=1e-4)


def test_final_newline_ends_the_last_line(tmp_path):
    (tmp_path / "r0").write_text("a b\n\n", encoding="utf-8")  # 2 instances, the second without
    (tmp_path / "r1").write_text("a c\nb", encoding="utf-8")  # no final newline: same 2
    (tmp_path / "h").write_text("a b\nb\n", encoding="utf-8")
    refs, hyps = webnlg.read_files(tmp_path / "r", tmp_path / "h")
    assert refs == [["a b", "a c"], ["", "b"]] and hyps == ["a b", "b"]
    (tmp_path / "h").write_text("a b\nb\n\n", encoding="utf-8")  # a third, empty, instance
    with pytest.raises(InputError, match=r"r0 has 2 lines but .*h has 3"):
        webnlg.read_files(tmp_path / "r", tmp_path / "h")
    with pytest.raises(InputError, match=r": r2 missing \(-nr 3 needs r0 to r2 without a gap; present: r0, r1\)"):
        webnlg.read_files(tmp_path / "r", tmp_path / "h", num_refs=3)


def test_metric_names():
    assert webnlg.metric_names("TER,bleu") == ["BLEU", "TER"]
    for name, message in (
        ("bert", "BERTScore is not offered"),
        ("bleurt", "BLEURT is not offered"),
    ):
        with pytest.raises(InputError, match=message):
            webnlg.metric_names(f"bleu,{name}")
    with pytest.raises(InputError, match="unknown metric 'rouge'"):
        webnlg.metric_names("rouge")


def test_generation_eval_script_runs_from_a_checkout(tmp_path):
    (tmp_path / "reference0").write_text("the cat sat on the mat\nhello world\n", encoding="utf-8")
    (tmp_path / "reference1").write_text("a cat is on the mat\n\n", encoding="utf-8")
    (tmp_path / "hypothesis").write_text("the cat is on the mat\nhello world\n", encoding="utf-8")
    script = [sys.executable, str(REPO / "eval" / "generation_eval.py")]
    args = ["-R", str(tmp_path / "reference"), "-H", str(tmp_path / "hypothesis"), "-nr", "2"]
    done = subprocess.run(
        [*script, *args, "-m", "ter,bleu"], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    # BLEU: the hand-checked multi-bleu case of test_mteval; TER: "the" for "a" (1 edit of 6
    # words) against the second reference, the second line exact: (1/6 + 0) / 2
    assert done.stdout.splitlines()[:3] == [" BLEU   TER", "-----  ----", "84.09  0.08"]
    done = subprocess.run([*script, *args, "-m", "bleu,bert"], capture_output=True, text=True)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("generation_eval.py: error: BERTScore is not offered here")


# ---------------------------------------------------------------------------------------------
# A gap in a reference folder is named, never skipped
# ---------------------------------------------------------------------------------------------


def test_a_gap_in_a_reference_folder_is_named_by_every_entry_point(tmp_path, capsys):
    from nlg.metrics import score_files

    refs = tmp_path / "refs"
    refs.mkdir()
    (refs / "reference0").write_text("the cat sat on the mat .\na dog runs .\n")
    (refs / "reference2").write_text("a cat is on the mat .\nthe dog runs fast .\n")
    hyp = tmp_path / "hypothesis"
    hyp.write_text("the cat is on the mat .\nthe dog runs .\n")
    before = snapshot(tmp_path)
    gap = f"{refs}: reference1 missing (need reference0 to reference2 without a gap; present: reference0, reference2)"
    # the folder, the prefix, and -nr 1 or 2, which the gap cuts short (reference0 alone was scored)
    for argv in ([refs], [refs / "reference"], [refs, "-nr", 1], [refs, "-nr", 2]):
        assert nlg("score", *argv[:1], hyp, *argv[1:], "-m", "bleu,ter", "--json", tmp_path / "s.json") == 2
        assert error_line(capsys) == f"nlg score: error: {gap}\n"
    with pytest.raises(InputError) as raised:
        score_files("webnlg", refs, hyp, metrics="bleu")
    assert str(raised.value) == gap
    # -nr larger than the files present is an error too, naming what is missing below it
    assert nlg("score", refs, hyp, "-nr", 4) == 2
    assert error_line(capsys) == (f"nlg score: error: {refs}: reference1, reference3 missing (-nr 4 needs reference0 "
                                  "to reference3 without a gap; present: reference0, reference2)\n")
    # GenerationEval's own arguments (its default -nr 4), as a user runs the script
    script = [sys.executable, str(REPO / "eval" / "generation_eval.py"), "-R", str(refs / "reference"), "-H", str(hyp)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([*script, "-nr", "3", "-m", "bleu"], capture_output=True, text=True, env=env)
    assert (done.returncode, done.stdout, done.stderr) == (
        2, "", f"generation_eval.py: error: {refs}: reference1 missing (-nr 3 needs reference0 to reference2 without "
               "a gap; present: reference0, reference2)\n")
    # the first file missing: the prefix alone is still read as GenerationEval's layout
    (refs / "reference0").rename(tmp_path / "aside")
    assert nlg("score", refs / "reference", hyp) == 2
    assert error_line(capsys) == (f"nlg score: error: {refs}: reference0, reference1 missing (need reference0 to "
                                  "reference2 without a gap; present: reference2)\n")
    (tmp_path / "aside").rename(refs / "reference0")
    assert snapshot(tmp_path) == before  # nothing written
    # the gap filled, every file counts
    (refs / "reference1").write_text("the cat is on the mat .\nthe dog runs .\n")
    assert nlg("score", refs, hyp, "-m", "bleu,ter", "--json", tmp_path / "s.json") == 0
    scores = json.loads((tmp_path / "s.json").read_text())
    assert {k: v for k, v in scores.items() if k != "scored"} == {"BLEU": 100.0, "TER": 0.0}


# ---------------------------------------------------------------------------------------------
# Notes: each said once per process
# ---------------------------------------------------------------------------------------------


def test_a_note_that_says_the_same_prints_once_per_process(tmp_path, capsys, monkeypatch):
    """Which tokenisation ran (with or without NLTK's punkt data) is the same note for every
    subset a run scores or compares: printed once per process. A note that differs (here the
    count of lines a sentence break changes, where punkt is missing) is printed each time."""
    from nlg import metrics

    monkeypatch.setattr(metrics, "_NOTED", set())  # a fresh process
    subsets = {"seen": ["The cat sat. It ran.", "a dog ."], "unseen": ["The dog sat. It ran.", "Cats sat. They slept."]}
    for name, lines in subsets.items():
        folder = tmp_path / name
        folder.mkdir()
        for k in range(2):
            (folder / f"reference{k}").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        (folder / "hypothesis").write_text("the cat sat .\na dog .\n", encoding="utf-8")
        assert nlg("score", folder, folder / "hypothesis", "-m", "ter") == 0
    name = "NLTK 3.5 word_tokenize rules; sentences " + (
        "by NLTK's punkt, as GenerationEval" if punkt_sentences() else
        "cut at . ? ! (NLTK's punkt data is not installed)")
    err = capsys.readouterr().err
    assert err.count(f"note: METEOR and TER on tokenised text: {name}\n") == 1
    if punkt_sentences() is None:  # 1 line of seen, 2 of unseen (references; hypotheses alike)
        assert re.findall(r"note: (\d) line\(s\) hold sentence breaks", err) == ["1", "2"]
    # nlg compare over a run's two subsets: the same note once
    monkeypatch.setattr(metrics, "_NOTED", set())
    files = {name: {"references": name, "predictions": f"{name}/hypothesis"} for name in subsets}
    (tmp_path / "run.json").write_text(json.dumps({"dataset": "webnlg", "subsets": files,
                                                   "untrained": files}), encoding="utf-8")
    assert nlg("compare", tmp_path, "-m", "ter", "--resamples", 5) == 0
    err = capsys.readouterr().err
    assert err.count(f"note: METEOR and TER on tokenised text: {name}\n") == 1
    # the next process says it again
    monkeypatch.setattr(metrics, "_NOTED", set())
    assert nlg("score", tmp_path / "seen", tmp_path / "seen" / "hypothesis", "-m", "ter") == 0
    assert capsys.readouterr().err.count("note: METEOR and TER on tokenised text") == 1
