"""GenerationEval's word tokenisation: `' '.join(nltk.word_tokenize(text))` as NLTK 3.5 does it.

GenerationEval pins nltk==3.5 and runs METEOR and TER on text tokenised by `nltk.word_tokenize`:
Punkt splits the text into sentences (this needs NLTK's `punkt` data), then each sentence goes
through NLTKWordTokenizer, a list of regular-expression rewrites (quotes, punctuation, brackets,
clitics) followed by a split on whitespace. Later NLTK releases changed some of those rules
(en dashes become tokens of their own, `'n` stays one token, ...): with the NLTK installed here
1.4% of the WebNLG 2017 texts would tokenise differently from GenerationEval, so the rules of
NLTK 3.5 (Apache 2.0) are restated below, in their order; they are also about 2.5x faster than
the newer NLTK's. Sentences still come from NLTK's own Punkt where its data is installed.

Without Punkt's data (offline machines often lack it), `sentences` splits after every `.`,
`?` or `!` (and closing quotes or brackets) that a space follows. Punkt breaks only at such
places, and only sentence-final periods and sentence-initial quotes tokenise differently at a
break, so on text that is already tokenised (every punctuation mark its own token, as the
paper's `--tokenize` decode writes it) the tokens are the same with or without Punkt.
`Tokenizer.changed_by_split` counts the lines where a break changes the tokens: the lines whose
tokens may differ from GenerationEval's when Punkt is missing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

# NLTK 3.5 NLTKWordTokenizer, in order: (pattern, replacement)
_STARTING_QUOTES = [
    (r"([«“‘„]|[`]+)", r" \1 "),
    (r"^\"", r"``"),
    (r"(``)", r" \1 "),
    (r"([ \(\[{<])(\"|\'{2})", r"\1 `` "),
    (r"(?i)(\')(?!re|ve|ll|m|t|s|d)(\w)\b", r"\1 \2"),
]
_PUNCTUATION = [
    (r'([^\.])(\.)([\]\)}>"\'»”’ ]*)\s*$', r"\1 \2 \3 "),
    (r"([:,])([^\d])", r" \1 \2"),
    (r"([:,])$", r" \1 "),
    (r"\.{2,}", r" \g<0> "),
    (r"[;@#$%&]", r" \g<0> "),
    (r'([^\.])(\.)([\]\)}>"\']*)\s*$', r"\1 \2\3 "),  # the final period
    (r"[?!]", r" \g<0> "),
    (r"([^'])' ", r"\1 ' "),
    (r"[*]", r" \g<0> "),
    (r"[\]\[\(\)\{\}\<\>]", r" \g<0> "),  # brackets
    (r"--", r" -- "),
]
# applied after padding the text with a space on both sides
_ENDING_QUOTES = [
    (r"([»”’])", r" \1 "),
    (r'"', " '' "),
    (r"(\S)(\'\')", r"\1 \2 "),
    (r"([^' ])('[sS]|'[mM]|'[dD]|') ", r"\1 \2 "),
    (r"([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) ", r"\1 \2 "),
]
_CONTRACTIONS = [  # Robert MacIntyre's, as NLTK lists them: (can)(not), (gon)(na), ...
    (pattern, r" \1 \2 ")
    for pattern in (
        r"(?i)\b(can)(not)\b",
        r"(?i)\b(d)('ye)\b",
        r"(?i)\b(gim)(me)\b",
        r"(?i)\b(gon)(na)\b",
        r"(?i)\b(got)(ta)\b",
        r"(?i)\b(lem)(me)\b",
        r"(?i)\b(mor)('n)\b",
        r"(?i)\b(wan)(na)\s",
        r"(?i) ('t)(is)\b",
        r"(?i) ('t)(was)\b",
    )
]
_BEFORE_PADDING = [(re.compile(p), r) for p, r in _STARTING_QUOTES + _PUNCTUATION]
_AFTER_PADDING = [(re.compile(p), r) for p, r in _ENDING_QUOTES + _CONTRACTIONS]
# Where Punkt may break a line: after . ? ! and closing quotes or brackets, before a space.
_SENTENCE_END = re.compile(r"(\S*?)([.?!])([\"'»”’)\]}]*)\s+(?=(\S))")


def word_tokens(sentence: str) -> list[str]:
    """NLTK 3.5's NLTKWordTokenizer().tokenize(sentence).

    >>> word_tokens('He said "it\\'s 5$ (cheap)." Then left.')
    ['He', 'said', '``', 'it', "'s", '5', '$', '(', 'cheap', ')', '.', "''", 'Then', 'left', '.']
    """
    for pattern, replacement in _BEFORE_PADDING:
        sentence = pattern.sub(replacement, sentence)
    sentence = f" {sentence} "
    for pattern, replacement in _AFTER_PADDING:
        sentence = pattern.sub(replacement, sentence)
    return sentence.split()


def split_sentences(text: str) -> list[str]:
    """The text cut where a sentence probably ends, a stand-in for Punkt: after . ? ! (and
    closing quotes or brackets) and a space, unless the next word starts with a lower-case
    letter or the period ends an initial or an abbreviation with periods inside (`B.`, `U.S.`)."""
    pieces, start = [], 0
    for end in _SENTENCE_END.finditer(text):
        word, mark, next_char = end.group(1), end.group(2), end.group(4)
        if next_char.islower() or (
            mark == "." and (word.isalpha() and len(word) == 1 or "." in word)
        ):
            continue
        pieces.append(text[start : end.end(3)])
        start = end.end()
    pieces.append(text[start:])
    return [piece for piece in pieces if piece]


def punkt_sentences() -> Callable[[str], list[str]] | None:
    """NLTK's English Punkt sentence splitter, or None where its data is not installed."""
    try:
        from nltk.tokenize import sent_tokenize

        sent_tokenize("Punkt is here. Is it?")
    except (ImportError, LookupError, OSError):
        return None
    return sent_tokenize


@dataclass
class Tokenizer:
    """`' '.join(nltk.word_tokenize(line))` for many lines, each distinct line tokenised once.

    `sentences` splits a line into sentences: NLTK's Punkt (`punkt_sentences()`) or, where that
    is missing, `split_sentences`; then `changed_by_split` counts the lines whose tokens a
    sentence break changes (see the module docstring)."""

    sentences: Callable[[str], list[str]] | None = None
    changed_by_split: int = 0
    _cache: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        if self.sentences is None:
            return "NLTK 3.5 word_tokenize rules; sentences cut at . ? ! (NLTK's punkt data is not installed)"
        return "NLTK 3.5 word_tokenize rules; sentences by NLTK's punkt, as GenerationEval"

    def __call__(self, lines: Sequence[str]) -> list[str]:
        out = []
        for line in lines:
            if line not in self._cache:
                self._cache[line] = self._tokenize(line)
            out.append(self._cache[line])
        return out

    def _tokenize(self, line: str) -> str:
        if self.sentences is not None:
            return " ".join(t for sentence in self.sentences(line) for t in word_tokens(sentence))
        tokens = [t for sentence in split_sentences(line) for t in word_tokens(sentence)]
        if _SENTENCE_END.search(line) and tokens != word_tokens(line):
            self.changed_by_split += 1
        return " ".join(tokens)
