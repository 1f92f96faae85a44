"""nlg.metrics.chrf: chrF++ as GenerationEval's metrics/chrF.py, on cases worked out by hand."""

from __future__ import annotations

import pytest

from nlg.metrics.chrf import chrf, words


def test_words_split_one_punctuation_mark():
    assert words(" Hello, (world) it's 5.5 - ok.") == [
        "Hello",
        ",",
        "(world",
        ")",
        "it's",
        "5.5",
        "-",
        "ok",
        ".",
    ]


def test_chrf_two_lines():
    # line 1 "a b" / "a b": characters "ab": 1-grams 2 of 2, the 2-gram 1 of 1, no 3..6-grams;
    #   words: 1-grams 2 of 2, the 2-gram 1 of 1 -> sentence (1 + 1 + 1 + 1) / 8 = 0.5
    # line 2 "a c" / "a b": characters 1-grams 1 of 2 (P = R = 0.5), 2-grams 0 of 1; words the
    #   same -> sentence (0.5 + 0.5) / 8 = 0.125
    # corpus: char 1-grams 3/4, 2-grams 1/2, words 3/4, 1/2 (P = R, so F = P); the four empty
    #   character orders count 1e-16 each -> (0.75 + 0.5 + 0.75 + 0.5) / 8 = 0.3125
    corpus, sentences = chrf([["a b"], ["a b"]], ["a b", "a c"])
    assert corpus == pytest.approx(0.3125, abs=1e-15)
    assert sentences == [0.5, 0.125]


def test_chrf_best_reference_and_empty_references():
    # the second reference of line 2 is the hypothesis itself: its counts are kept; a line
    # whose references are all empty is left out, as GenerationEval drops it
    corpus, sentences = chrf([["a b", ""], ["a b", "a c"], ["", ""]], ["a b", "a c", "zzz"])
    assert sentences == [0.5, 0.5, None]
    assert corpus == pytest.approx((1 + 1 + 1 + 1) / 8, abs=1e-15)


def test_chrf_beta_weighs_recall():
    # hypothesis "a" against "a b": characters P = 1, R = 1/2; with beta 2
    # F = 5 * 1 * 0.5 / (4 * 1 + 0.5) = 5/9 for characters and for words
    corpus, _ = chrf([["a b"]], ["a"], char_order=1, word_order=1)
    assert corpus == pytest.approx(5 / 9)
    corpus, _ = chrf([["a b"]], ["a"], char_order=1, word_order=1, beta=1.0)
    assert corpus == pytest.approx(2 / 3)
