"""nlg.metrics.mteval: mteval-v13a BLEU/NIST (E2E) and multi-bleu-detok BLEU (GenerationEval).

The pinned E2E numbers were checked against the official scorer's mteval-v13a-sig.pl (Perl) and
pymteval.py: they agree to 1e-13. The small cases are derived by hand in the comments.
"""

from __future__ import annotations

import math

import pytest

from nlg.metrics import mteval

BETA = math.log(2) / math.log(1.5) ** 2  # NIST length penalty: exp(-BETA * ln(ratio)^2)


# ----------------------------------------------------------------------------------------------
# mteval tokenisation, BLEU and NIST
# ----------------------------------------------------------------------------------------------


def test_mteval_tokenization():
    tok = mteval.mteval_tokenize
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
    bleu, _ = mteval.bleu_nist(refs, preds)
    assert bleu == pytest.approx(expected, rel=1e-12)
    # segment level: the second output has no bigrams, so mteval counts p2..p4 as 1
    first, second = (
        mteval.segment_bleu_nist(s)[0] for s in mteval.mteval_statistics(refs, preds)
    )
    assert first == pytest.approx((3 / 4 * 2 / 3) ** 0.25, rel=1e-12)
    assert second == pytest.approx(math.exp(1 - 2 / 1), rel=1e-12)


def test_bleu_matches_nltk_on_e2e(e2e_test):
    from nltk.translate.bleu_score import corpus_bleu

    refs, preds, _ = e2e_test
    refs, preds = refs[:200], preds[:200]  # outputs of >= 4 words, where nltk and mteval coincide
    tokens = [[mteval.mteval_tokenize(r) for r in group] for group in refs]
    nltk = corpus_bleu(tokens, [mteval.mteval_tokenize(p) for p in preds])
    assert mteval.bleu_nist(refs, preds)[0] == pytest.approx(nltk, rel=1e-12)


def test_bleu_smoothing_of_zero_matches():
    # matches 2+2, 1+1, 0, 0 of 5+2, 4+1, 3, 2 n-grams; lengths 7 = 7, so no brevity penalty;
    # mteval replaces the zero precisions by 1/(2*3) and 1/(4*2)
    bleu, _ = mteval.bleu_nist([["a b c d e"], ["f g"]], ["a b x y z", "f g"])
    assert bleu == pytest.approx((4 / 7 * 2 / 5 * 1 / 6 * 1 / 8) ** 0.25, rel=1e-12)


def test_nist_information_weights():
    # reference words: a a b c q r (6); info(a) = log2(6/2), info(b) = info(q) = info(r) = log2 6,
    # info(a b) = log2(count(a) / count(a b)) = 1, info(q r) = log2(1/1) = 0. Output length 4 equals
    # the average reference length 6 / 1.5 (1.5 references per instance): no length penalty.
    _, nist = mteval.bleu_nist([["a b", "a c"], ["q r"]], ["a b", "q r"])
    expected = (math.log2(3) + 3 * math.log2(6)) / 4 + (1 + 0) / 2
    assert nist == pytest.approx(expected, rel=1e-12)


def test_nist_length_penalty_mteval_vs_pymteval():
    refs, preds = [["a b c d", "a b c e"], ["x y"]], ["a b", "x y"]
    # 10 reference words: info(a) = info(b) = log2(10/2), info(x) = info(y) = log2 10, bigram infos 0
    score = (2 * math.log2(5) + 2 * math.log2(10)) / 4
    # mteval: reference length 10 / 1.5 (mean references per instance) -> ratio 4 / (20/3) = 0.6
    bleu, nist = mteval.bleu_nist(refs, preds)
    assert nist == pytest.approx(score * math.exp(-BETA * math.log(0.6) ** 2), rel=1e-12)
    # pymteval: sum of per-instance mean reference lengths 4 + 2 -> ratio 2/3 -> penalty 1/2
    assert mteval.bleu_nist(refs, preds, pymteval=True)[1] == pytest.approx(score / 2, rel=1e-12)
    # BLEU: mteval takes p3 = p4 = 1 when the output has no trigrams at all; R = 6, C = 4
    assert bleu == pytest.approx(math.exp(1 - 6 / 4), rel=1e-12)


def test_empty_prediction_bleu_nist():
    refs, preds = [["a b c d"], ["a b c d"]], ["", "a b c d"]
    stats = mteval.mteval_statistics(refs, preds)
    assert stats[0].hyp_len == 0
    bleu, nist = mteval.corpus_bleu_nist(stats)
    # all precisions 1, closest reference 4 + 4 against 4 words
    assert bleu == pytest.approx(math.exp(1 - 8 / 4), rel=1e-12)
    # info of each word log2(8/2) = 2 -> (4 * 2) / 4; length ratio 4 / 8
    assert nist == pytest.approx(2 * math.exp(-BETA * math.log(0.5) ** 2), rel=1e-12)
    assert [mteval.segment_bleu_nist(s) for s in stats] == [(0.0, 0.0), (1.0, pytest.approx(2.0))]


def test_nist_prefix_zero_quirk():
    # mteval tests an n-gram's prefix string for truth, so "0 a" is weighed like a unigram:
    # info("0 a") = log2(6 words / 1), not log2(count("0") / 1) = 1
    _, nist = mteval.bleu_nist([["0 a 0 b"], ["c d"]], ["0 a", "c d"])
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
    assert mteval.bleu_nist(refs, preds, pymteval) == pytest.approx(expected, rel=1e-13)



# ----------------------------------------------------------------------------------------------
# multi-bleu-detok.perl (GenerationEval's BLEU)
# ----------------------------------------------------------------------------------------------


def test_multi_bleu_multi_reference_no_smoothing():
    refs = [["the cat sat on the mat", "a cat is on the mat"], ["hello world", ""]]
    hyps = ["the cat is on the mat", "hello world"]
    # clipped matches 6+2, 5+1, 3+0, 2+0 of 8, 6, 4, 3 n-grams; closest lengths 6 + 2 = 8 = C
    result = mteval.multi_bleu(refs, hyps)
    assert result.bleu == pytest.approx(100 * (1 * 1 * 3 / 4 * 2 / 3) ** 0.25, rel=1e-12)
    assert result.line().startswith("BLEU = 84.09, 100.0/100.0/75.0/66.7 (BP=1.000, ratio=1.000")
    # a precision of 0 gives 0: no smoothing
    assert mteval.multi_bleu([["a b x"]], ["a b c"]).bleu == 0.0
    # case-sensitive: "The" does not match "the"
    assert mteval.multi_bleu([["the cat"]], ["The cat"]).precisions[0] == 50.0


def test_multi_bleu_empty_reference_line_is_a_reference_of_length_0():
    # instance 2: "x" is closer to the empty reference (0 words) than to "x y z" (3 words), so
    # R = 4 + 0 and there is no brevity penalty; all precisions are 1
    refs = [["a b c d", "a b c d"], ["", "x y z"]]
    assert mteval.multi_bleu(refs, ["a b c d", "x"]).bleu == pytest.approx(100.0)
    assert mteval.multi_bleu([[""]], [""]).bleu == 0.0  # where Perl stops: nothing to count
