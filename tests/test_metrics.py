"""nlg.metrics: E2E scoring as the official measure_scores.py does it.

The pinned E2E numbers were checked against a re-creation of the official script (its
measure_scores.py multi-reference path, the scoring core of its mteval-v13a-sig.pl run by Perl, its
pymteval.py, stock pycocoevalcap): they agree to 1e-14 or better, per instance too. The small
BLEU/NIST cases are derived by hand in the comments. Java (METEOR, the PTB tokenizer) runs in one
test only (twice: with METEOR's full paraphrase table, then with the cached cut of it).
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from nlg import metrics
from nlg.files import InputError

REPO = Path(__file__).resolve().parents[1]
needs_java = pytest.mark.skipif(metrics.find_java() is None, reason="needs a Java runtime")
BETA = math.log(2) / math.log(1.5) ** 2  # NIST length penalty: exp(-BETA * ln(ratio)^2)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# bench/score_speed.py (a script: bench/ is not a package) reads the E2E test set and makes the
# template outputs it times; the tests pin the scores of those very outputs
_spec = importlib.util.spec_from_file_location("score_speed", REPO / "bench" / "score_speed.py")
score_speed = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(score_speed)


@pytest.fixture(scope="module")
def e2e_test(e2e_raw_dir) -> tuple[list[list[str]], list[str], list[str]]:
    """References per distinct MR of the test split (first-occurrence order), template outputs,
    and each instance's first reference as a second system."""
    groups = score_speed.e2e_groups(e2e_raw_dir / "test.txt")
    refs = list(groups.values())
    return refs, [score_speed.template_output(mr) for mr in groups], [group[0] for group in refs]


def e2e_files(tmp_path: Path, refs: list[list[str]], preds: list[str]) -> tuple[Path, Path]:
    ref = write(tmp_path / "ref.txt", "".join("\n".join(group) + "\n\n" for group in refs))
    return ref, write(tmp_path / "pred.txt", "".join(p + "\n" for p in preds))


# ----------------------------------------------------------------------------------------------
# mteval tokenisation, BLEU and NIST
# ----------------------------------------------------------------------------------------------


def test_mteval_tokenization():
    tok = metrics.mteval_tokenize
    # punctuation split, but not ' - inside words, nor . , between digits; dash after a digit split
    expected = "the eagle's price : £20 - 25 , rated 4.5 out of 5 ."
    assert tok("The Eagle's price: £20-25, rated 4.5 out of 5.") == expected.split(" ")
    # entities decoded; Perl's tr/[A-Z]/[a-z]/ lowercases ASCII only
    assert tok("x-ray &amp; &quot;Café&quot; (ÉTÉ)") == 'x-ray & " café " ( ÉtÉ )'.split(" ")
    assert tok("") == [] and tok("   ") == []
    # pymteval (-p): Python lowercasing, and an empty text is one empty word
    assert tok("(ÉTÉ)", pymteval=True) == ["(", "été", ")"]
    assert tok("", pymteval=True) == [""]


def test_bleu_multi_reference_brevity_penalty():
    refs = [["the cat sat on the mat", "a cat is on the mat"], ["hello world"]]
    preds = ["the cat is on the mat", "hello"]
    # clipped matches 6+1, 5, 3, 2 of 7, 5, 4, 3 hypothesis n-grams ("the" clipped at 2 by ref 1);
    # closest reference lengths 6 + 2 = 8 against 7 output words
    expected = math.exp(1 - 8 / 7) * (7 / 7 * 5 / 5 * 3 / 4 * 2 / 3) ** 0.25
    bleu, _ = metrics.bleu_nist(refs, preds)
    assert bleu == pytest.approx(expected, rel=1e-12)
    # segment level: the second output has no bigrams, so mteval counts p2..p4 as 1
    first, second = (
        metrics.segment_bleu_nist(s)[0] for s in metrics.mteval_statistics(refs, preds)
    )
    assert first == pytest.approx((3 / 4 * 2 / 3) ** 0.25, rel=1e-12)
    assert second == pytest.approx(math.exp(1 - 2 / 1), rel=1e-12)


def test_bleu_matches_nltk_on_e2e(e2e_test):
    from nltk.translate.bleu_score import corpus_bleu

    refs, preds, _ = e2e_test
    refs, preds = refs[:200], preds[:200]  # outputs of >= 4 words, where nltk and mteval coincide
    tokens = [[metrics.mteval_tokenize(r) for r in group] for group in refs]
    nltk = corpus_bleu(tokens, [metrics.mteval_tokenize(p) for p in preds])
    assert metrics.bleu_nist(refs, preds)[0] == pytest.approx(nltk, rel=1e-12)


def test_bleu_smoothing_of_zero_matches():
    # matches 2+2, 1+1, 0, 0 of 5+2, 4+1, 3, 2 n-grams; lengths 7 = 7, so no brevity penalty;
    # mteval replaces the zero precisions by 1/(2*3) and 1/(4*2)
    bleu, _ = metrics.bleu_nist([["a b c d e"], ["f g"]], ["a b x y z", "f g"])
    assert bleu == pytest.approx((4 / 7 * 2 / 5 * 1 / 6 * 1 / 8) ** 0.25, rel=1e-12)


def test_nist_information_weights():
    # reference words: a a b c q r (6); info(a) = log2(6/2), info(b) = info(q) = info(r) = log2 6,
    # info(a b) = log2(count(a) / count(a b)) = 1, info(q r) = log2(1/1) = 0. Output length 4 equals
    # the average reference length 6 / 1.5 (1.5 references per instance): no length penalty.
    _, nist = metrics.bleu_nist([["a b", "a c"], ["q r"]], ["a b", "q r"])
    expected = (math.log2(3) + 3 * math.log2(6)) / 4 + (1 + 0) / 2
    assert nist == pytest.approx(expected, rel=1e-12)


def test_nist_length_penalty_mteval_vs_pymteval():
    refs, preds = [["a b c d", "a b c e"], ["x y"]], ["a b", "x y"]
    # 10 reference words: info(a) = info(b) = log2(10/2), info(x) = info(y) = log2 10, bigram infos 0
    score = (2 * math.log2(5) + 2 * math.log2(10)) / 4
    # mteval: reference length 10 / 1.5 (mean references per instance) -> ratio 4 / (20/3) = 0.6
    bleu, nist = metrics.bleu_nist(refs, preds)
    assert nist == pytest.approx(score * math.exp(-BETA * math.log(0.6) ** 2), rel=1e-12)
    # pymteval: sum of per-instance mean reference lengths 4 + 2 -> ratio 2/3 -> penalty 1/2
    assert metrics.bleu_nist(refs, preds, pymteval=True)[1] == pytest.approx(score / 2, rel=1e-12)
    # BLEU: mteval takes p3 = p4 = 1 when the output has no trigrams at all; R = 6, C = 4
    assert bleu == pytest.approx(math.exp(1 - 6 / 4), rel=1e-12)


def test_empty_prediction_bleu_nist():
    refs, preds = [["a b c d"], ["a b c d"]], ["", "a b c d"]
    stats = metrics.mteval_statistics(refs, preds)
    assert stats[0].hyp_len == 0
    bleu, nist = metrics.corpus_bleu_nist(stats)
    # all precisions 1, closest reference 4 + 4 against 4 words
    assert bleu == pytest.approx(math.exp(1 - 8 / 4), rel=1e-12)
    # info of each word log2(8/2) = 2 -> (4 * 2) / 4; length ratio 4 / 8
    assert nist == pytest.approx(2 * math.exp(-BETA * math.log(0.5) ** 2), rel=1e-12)
    assert [metrics.segment_bleu_nist(s) for s in stats] == [(0.0, 0.0), (1.0, pytest.approx(2.0))]


def test_nist_prefix_zero_quirk():
    # mteval tests an n-gram's prefix string for truth, so "0 a" is weighed like a unigram:
    # info("0 a") = log2(6 words / 1), not log2(count("0") / 1) = 1
    _, nist = metrics.bleu_nist([["0 a 0 b"], ["c d"]], ["0 a", "c d"])
    unigrams = (math.log2(6 / 2) + 3 * math.log2(6)) / 4  # 0 a c d
    bigrams = (math.log2(6) + 0) / 2  # "0 a", "c d"
    assert nist == pytest.approx(
        (unigrams + bigrams) * math.exp(-BETA * math.log(4 / 6) ** 2), rel=1e-12
    )


@pytest.mark.parametrize(
    "system, pymteval, expected",
    [
        # (BLEU, NIST): mteval-v13a-sig.pl and pymteval.py on the same files
        ("template", False, (0.5847805173742846, 7.8897966016327157)),
        ("template", True, (0.5847805173742846, 7.7756876850963135)),
        ("first_ref", False, (1.0, 14.196634303092049)),
        ("first_ref", True, (1.0, 14.19358773012323)),
    ],
)
def test_e2e_bleu_nist_match_official(e2e_test, system, pymteval, expected):
    refs, template, first_ref = e2e_test
    preds = template if system == "template" else first_ref
    assert metrics.bleu_nist(refs, preds, pymteval) == pytest.approx(expected, rel=1e-13)


# ----------------------------------------------------------------------------------------------
# Files, errors, output
# ----------------------------------------------------------------------------------------------


def test_read_references_formats(tmp_path):
    multi = write(tmp_path / "multi.txt", "a b\n c d \n\ne f\n\n\n")
    assert metrics.read_references(multi) == [["a b", "c d"], ["e f"]]
    no_trailing_blank = write(tmp_path / "nt.txt", "a\n\nb\nc")
    assert metrics.read_references(no_trailing_blank) == [["a"], ["b", "c"]]
    single = write(tmp_path / "single.txt", "a\nb\nc\n")  # no blank line: one reference per line
    assert metrics.read_references(single) == [["a"], ["b"], ["c"]]


@pytest.mark.parametrize("text, line", [("a\n\n\nb\n", 3), ("\na\n\nb\n", 1)])
def test_read_references_rejects_empty_instance(tmp_path, text, line):
    path = write(tmp_path / "ref.txt", text)
    with pytest.raises(InputError, match=rf"ref.txt:{line}: .*without references"):
        metrics.read_references(path)


def test_undecodable_bytes_name_file_and_line(tmp_path):
    ref = write(tmp_path / "ref.txt", "a\n\nb\n\n")
    pred = tmp_path / "pred.txt"
    pred.write_bytes(b"fine\nbad \xff byte\n")
    with pytest.raises(InputError, match=r"pred.txt:2: not valid UTF-8"):
        metrics.score_files(ref, pred, java=None)


def test_count_mismatch_names_both_files_and_counts(tmp_path, capsys):
    ref = write(tmp_path / "ref.txt", "a\nb\n\nc\n\nd\n\n")  # 3 instances
    with pytest.raises(
        InputError, match=r"pred.txt has 2 predictions but .*ref.txt has 3 instances"
    ):
        metrics.score_files(ref, write(tmp_path / "pred.txt", "a\nc\n"), java=None)
    with pytest.raises(InputError, match=r"has 4 predictions .* ends with 1 extra empty line"):
        metrics.score_files(ref, write(tmp_path / "pred.txt", "a\nc\nd\n\n"), java=None)
    # through the CLI: one line on stderr, exit code 2
    from nlg.cli import main

    assert main(["score", str(ref), str(write(tmp_path / "p1.txt", "a\n"))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "p1.txt has 1 predictions" in err and "3 instances" in err


def test_format_scores_layout():
    scores = {
        "BLEU": 0.63349,
        "NIST": 8.29944,
        "METEOR": None,
        "ROUGE_L": 0.67627,
        "CIDEr": 2.04994,
    }
    assert metrics.format_scores(scores) == (
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


def test_without_java_bleu_nist_still_print(tmp_path):
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
# All five metrics (Java): the only test that starts METEOR
# ----------------------------------------------------------------------------------------------


@needs_java
def test_e2e_all_five_metrics_match_official(e2e_test, tmp_path):
    refs, preds, _ = e2e_test
    # two more instances whose outputs are empty after tokenisation (empty; only punctuation):
    # they must score 0, not crash METEOR or shift the PTB tokenizer's lines
    refs = refs + [["The Eagle is a pub .", "A pub , The Eagle ."], ["Aroma is cheap ."]]
    preds = preds + ["", ". ,"]
    ref, pred = e2e_files(tmp_path, refs, preds)
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
    assert json.loads(outputs[0][0]) == pytest.approx(official, rel=1e-12)
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


def test_cut_paraphrase_table_keeps_entries_a_reference_can_match(tmp_path):
    entries = [  # (probability, phrase, paraphrase), sorted by phrase as METEOR's table is
        (b"0.1", b"a pub", b"an inn"),  # phrase wholly in the vocabulary: kept
        (b"0.2", b"a pub", b"a bar"),  # kept (same phrase)
        (b"0.3", b"bistro", b"a cafe"),  # paraphrase wholly in the vocabulary: kept
        (b"0.4", b"bistro", b"eatery"),  # neither side: no reference can match it
        (b"0.5", b"pub food", b"a bar"),  # "food" unknown, "bar" unknown: dropped
    ]
    text = b"".join(b"\n".join(entry) + b"\n" for entry in entries)
    source = tmp_path / "table.gz"
    source.write_bytes(gzip.compress(text))
    for block_size in (1, 7, 1 << 22):  # blocks that cut lines and entries anywhere
        assert list(metrics._table_entries(source, block_size)) == entries
    target = tmp_path / "cache" / "cut.gz"
    assert metrics.cut_paraphrase_table(source, target, {b"a", b"pub", b"cafe"}) == (3, 5)
    assert gzip.decompress(target.read_bytes()) == b"".join(
        b"\n".join(entry) + b"\n" for entry in entries[:3]
    )
    assert metrics.cached_cut_table(target) == target
    target.write_bytes(gzip.compress(b"0.1\na pub\nan inn\n"))  # damaged: not used
    assert metrics.cached_cut_table(target) is None
    assert metrics.cached_cut_table(tmp_path / "missing.gz") is None


def test_eval_measure_scores_wrapper_runs_from_a_checkout(tmp_path):
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
