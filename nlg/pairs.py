"""The pair format every dataset is turned into, and that training, beam search and decoding read.

Two JSON-lines files per split, one pair per line, in the same order:

    {split}_formatted.jsonl  {"context": "name : The Vaults | Type : pub | ...", "completion": "The Vaults pub ..."}
                             WebNLG lines end with `"cate": true` (the entry's category was seen
                             in training) or `"cate": false`
    {split}.jsonl            {"context": bpe(context) + [50256], "completion": bpe(" " + completion) + [50256]}

The completion is encoded with one leading space because it follows the context in the
training sequence, and GPT-2 words carry their leading space. 50256 (<|endoftext|>) ends
both halves: after the context it marks where generation starts, after the completion it
is the learned stop. The encoded file never carries `cate` (the paper's gpt2_encode.py keeps
context and completion only).

Both files are spelled as the LoRA paper's scripts spell them: Python's json.dumps with its
defaults (", " and ": " separators, non-ASCII escaped as "\\u00a3"), keys in the order
context, completion, cate. So they are byte for byte the paper's files.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from tqdm import tqdm

from nlg.files import InputError, read_jsonl
from nlg.tokenizer import VOCAB_SIZE, Tokenizer

CHUNK = 4096  # pairs per encode call; sets how often the progress bar moves
KEYS = ("context", "completion")
CATE = "cate"


@dataclass(frozen=True)
class TextPair:
    """One data record and one human reference, as text."""

    context: str
    completion: str
    line: int  # where it came from: the line of a text or jsonl file, the entry of a json/XML file
    cate: bool | None = None  # WebNLG: the category was seen in training; None where there is none


@dataclass(frozen=True)
class Pair:
    """One pair as GPT-2 token ids, each half ending in 50256."""

    context: list[int]
    completion: list[int]
    line: int


def encode_pairs(pairs: list[TextPair], tokenizer: Tokenizer, bar: tqdm | None = None) -> list[Pair]:
    """Token ids of each pair: bpe(context) + [eos], bpe(" " + completion) + [eos]."""
    encoded = []
    eos = [tokenizer.eos_id]
    for start in range(0, len(pairs), CHUNK):
        chunk = pairs[start:start + CHUNK]
        ids = tokenizer.encode_batch([p.context for p in chunk] + [" " + p.completion for p in chunk])
        contexts, completions = ids[:len(chunk)], ids[len(chunk):]
        encoded += [Pair(c + eos, r + eos, p.line) for p, c, r in zip(chunk, contexts, completions, strict=True)]
        if bar is not None:
            bar.update(len(chunk))
    return encoded


def jsonl_line(pair: TextPair | Pair) -> str:
    """One output line, spelled as the paper's scripts spell it (json.dumps defaults)."""
    record: dict[str, object] = {"context": pair.context, "completion": pair.completion}
    if isinstance(pair, TextPair) and pair.cate is not None:
        record[CATE] = pair.cate
    return json.dumps(record) + "\n"


# -- reading the files back -------------------------------------------------------------


def _record(number: int, obj: object, where: str, optional: tuple[str, ...] = ()) -> dict:
    if not isinstance(obj, dict) or not set(KEYS) <= set(obj) <= {*KEYS, *optional}:
        keys = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        wanted = " and ".join(KEYS) + "".join(f" (and optionally {key})" for key in optional)
        raise InputError(f"{where}:{number}: expected an object with keys {wanted}, got {keys}")
    return obj


def load_formatted(path: str | os.PathLike) -> list[TextPair]:
    """Text pairs of a `{split}_formatted.jsonl`: both halves non-empty strings, `cate` a bool if there."""
    pairs = []
    for number, obj in read_jsonl(path):
        record = _record(number, obj, str(path), optional=(CATE,))
        for key in KEYS:
            if not isinstance(record[key], str) or not record[key].strip():
                raise InputError(f"{path}:{number}: {key} must be a non-empty string")
        cate = record.get(CATE)
        if CATE in record and not isinstance(cate, bool):
            raise InputError(f"{path}:{number}: {CATE} must be true or false, got {cate!r}")
        pairs.append(TextPair(record["context"], record["completion"], number, cate))
    if not pairs:
        raise InputError(f"{path}: no pairs")
    return pairs


def _token_ids(value: object, where: str, key: str, vocab_size: int) -> list[int]:
    if not isinstance(value, list) or not value:
        raise InputError(f"{where}: {key} must be a non-empty list of token ids")
    if not all(type(t) is int for t in value):  # `type is`: json gives no bools here, but a caller might
        raise InputError(f"{where}: {key} must hold integers only")
    if min(value) < 0 or max(value) >= vocab_size:
        bad = next(t for t in value if not 0 <= t < vocab_size)
        raise InputError(f"{where}: {key} has token id {bad}, outside [0, {vocab_size})")
    return value


def load_encoded(path: str | os.PathLike, vocab_size: int = VOCAB_SIZE) -> list[Pair]:
    """Token pairs of a `{split}.jsonl`: lists of ids in [0, vocab_size), non-empty."""
    pairs = []
    for number, obj in read_jsonl(path):
        record = _record(number, obj, str(path))
        where = f"{path}:{number}"
        context = _token_ids(record["context"], where, "context", vocab_size)
        completion = _token_ids(record["completion"], where, "completion", vocab_size)
        pairs.append(Pair(context, completion, number))
    if not pairs:
        raise InputError(f"{path}: no pairs")
    return pairs
