"""nlg.metrics.treebank: GenerationEval's tokenisation (NLTK 3.5's word_tokenize).

Checked outside the test suite against NLTK 3.5 itself (GenerationEval's pinned version) on all
53,697 texts and triples of the WebNLG 2017 train, dev and test XML: NLTKWordTokenizer's tokens
are identical for every one, and so are word_tokenize's with Punkt's English data installed.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from nlg.metrics.treebank import Tokenizer, punkt_sentences, split_sentences, word_tokens


def test_word_tokens_nltk_35_rules():
    assert word_tokens('He said "it\'s 5$ (cheap)." Then left.') == [
        "He",
        "said",
        "``",
        "it",
        "'s",
        "5",
        "$",
        "(",
        "cheap",
        ")",
        ".",
        "''",
        "Then",
        "left",
        ".",
    ]
    # NLTK 3.5 keeps en dashes inside words and splits 'n (later releases do the opposite)
    assert word_tokens("Madrid–Barajas piece 'n bacon") == [
        "Madrid–Barajas",
        "piece",
        "'",
        "n",
        "bacon",
    ]
    assert word_tokens("I cannot, gonna: 3,5 ... ok!?") == [
        "I",
        "can",
        "not",
        ",",
        "gon",
        "na",
        ":",
        "3,5",
        "...",
        "ok",
        "!",
        "?",
    ]
    assert word_tokens("") == []


def test_split_sentences_stand_in():
    assert split_sentences("It is 5. The U.S. army, Mr. B. Smith. ok. Fine") == [
        "It is 5.",
        "The U.S. army, Mr.",
        "B. Smith. ok.",
        "Fine",
    ]


def dev_texts(shared_dir) -> list[str]:
    files = sorted((shared_dir / "data" / "webnlg-2017" / "dev").glob("*triples/*.xml"))
    return [lex.text or "" for f in files for lex in ET.parse(f).getroot().iter("lex")]


def paper_tokenize(text: str) -> str:
    """The LoRA paper's decode with --tokenize --lower."""
    return " ".join(" ".join(re.split(r"(\W)", text.lower())).split())


def test_tokenised_text_needs_no_punkt(shared_dir):
    texts = [paper_tokenize(t) for t in dev_texts(shared_dir)]
    without = Tokenizer(None)
    tokens = without(texts)
    assert without.changed_by_split == 0  # no sentence break changes a token
    assert tokens == [" ".join(word_tokens(t)) for t in texts]
    sentences = punkt_sentences()
    if sentences is None:
        pytest.skip("NLTK's punkt data is not installed")
    assert Tokenizer(sentences)(texts) == tokens


def test_raw_text_without_punkt_counts_lines_a_break_changes(shared_dir):
    texts = dev_texts(shared_dir)
    without = Tokenizer(None)
    without(texts)
    assert 0 < without.changed_by_split < len(texts)
    assert "punkt data is not installed" in without.name
