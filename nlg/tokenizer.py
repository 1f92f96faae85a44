"""GPT-2 byte-pair encoding, run by tiktoken, with the ids of OpenAI's original encoder.

The vocabulary comes as two "data-gym" files (the ones GPT-2 was released with):

    encoder.json   {"!": 0, "\"": 1, ..., "\u0120the": 262, ..., "<|endoftext|>": 50256}
                   token -> id; a token is a byte string spelled in GPT-2's printable
                   byte alphabet (`byte_alphabet`), e.g. "\u0120" is the byte b" ".
    vocab.bpe      "#version: 0.2" then 50,000 merges "a b", highest priority first.

GPT-2 encodes a text by splitting it with `GPT2_PATTERN` into words (a leading space
sticks to the word after it) and byte-pair merging each word. tiktoken merges by the
*id of the merged token* instead of the merge's line in vocab.bpe; the two agree because
merge i produces token 256 + i. `read_vocab` checks exactly that, so a mismatched pair of
files is an error here rather than silently different ids.

Text is always encoded as ordinary text: a literal "<|endoftext|>" inside a string
becomes the seven tokens of its characters, never id 50256 -- the same as the original
encoder the LoRA paper used. The end-of-text id is only ever appended explicitly.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import tiktoken

from nlg.files import InputError, read_json, read_lines

# GPT-2's own split pattern, character for character (openai/gpt-2 src/encoder.py).
# tiktoken ships a rewritten but equivalent one for its "gpt2" encoding; we keep the original.
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
EOS = "<|endoftext|>"
EOS_ID = 50256
BLANK_LINE_ID = 628  # "\n\n": the paper ends E2E completions on it too (nlg beam --eos_token_id 628)
VOCAB_SIZE = 50257
N_MERGES = VOCAB_SIZE - 256 - 1  # 256 single bytes + merges + <|endoftext|>
VOCAB_FILES = ("encoder.json", "vocab.bpe")
VOCAB_ENV = "NLG_VOCAB_DIR"

HOW_TO_GET_VOCAB = (
    "give a directory holding GPT-2's encoder.json and vocab.bpe with --vocab DIR "
    f"or the {VOCAB_ENV} environment variable (they are published at "
    "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/{encoder.json,vocab.bpe})"
)


@lru_cache(maxsize=1)
def byte_alphabet() -> dict[int, str]:
    """GPT-2's spelling of the 256 bytes as printable characters (byte -> character).

    Bytes that print as themselves (`!`..`~`, `¡`..`¬`, `®`..`ÿ`) keep their code point;
    the other 68 (space, control characters, ...) take code points 256, 257, ... in
    byte order. So b" " is "Ġ" (U+0120) and b"\\n" is "Ċ" (U+010A).
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    alphabet = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in alphabet:
            alphabet[b] = chr(256 + extra)
            extra += 1
    return alphabet


@lru_cache(maxsize=1)
def _alphabet_bytes() -> dict[str, int]:
    return {char: b for b, char in byte_alphabet().items()}


def _token_bytes(token: str, where: str) -> bytes:
    """Bytes of a token spelled in the byte alphabet."""
    decode = _alphabet_bytes()
    try:
        return bytes(decode[char] for char in token)
    except KeyError as error:
        raise InputError(f"{where}: token {token!r} has a character outside GPT-2's byte alphabet ({error.args[0]!r})") from None


def read_vocab(vocab_dir: str | os.PathLike) -> dict[bytes, int]:
    """Mergeable ranks for tiktoken (token bytes -> id) from encoder.json + vocab.bpe.

    Checks that the files are GPT-2's layout: 50,257 ids, <|endoftext|> = 50256, every
    single byte a token with id < 256, and merge i of vocab.bpe producing token 256 + i
    (the property that makes tiktoken's rank order equal GPT-2's merge order).
    """
    vocab_dir = Path(vocab_dir)
    missing = [name for name in VOCAB_FILES if not (vocab_dir / name).is_file()]
    if missing:
        raise InputError(f"{vocab_dir}: no {' or '.join(missing)} there; {HOW_TO_GET_VOCAB}")
    encoder_path, merges_path = (vocab_dir / name for name in VOCAB_FILES)

    encoder = read_json(encoder_path)
    if not isinstance(encoder, dict) or len(encoder) != VOCAB_SIZE:
        raise InputError(f"{encoder_path}: expected a JSON object of {VOCAB_SIZE} tokens")
    if encoder.get(EOS) != EOS_ID:
        raise InputError(f"{encoder_path}: {EOS} must have id {EOS_ID}, found {encoder.get(EOS)!r}")
    ranks = {_token_bytes(token, str(encoder_path)): rank for token, rank in encoder.items() if token != EOS}
    if len(ranks) != VOCAB_SIZE - 1 or sorted(ranks.values()) != list(range(VOCAB_SIZE - 1)):
        raise InputError(f"{encoder_path}: ids must be 0..{VOCAB_SIZE - 1}, each used once")
    if any(len(token) == 1 and rank >= 256 for token, rank in ranks.items()):
        raise InputError(f"{encoder_path}: the 256 single bytes must have ids 0..255")

    lines = read_lines(merges_path)
    merges = [line for line in lines[1:] if line]
    if not lines or not lines[0].startswith("#version") or len(merges) != N_MERGES:
        raise InputError(f"{merges_path}: expected a '#version' line then {N_MERGES} merges, found {len(merges)}")
    for index, line in enumerate(merges):
        where = f"{merges_path}:{index + 2}"
        parts = line.split(" ")
        if len(parts) != 2:
            raise InputError(f"{where}: a merge is two tokens separated by one space, got {line!r}")
        merged = _token_bytes(parts[0], where) + _token_bytes(parts[1], where)
        if ranks.get(merged) != 256 + index:
            raise InputError(f"{where}: merge {line!r} should make token {256 + index} of encoder.json, "
                             f"which has {ranks.get(merged)!r}; the two files do not belong together")
    return ranks


def download_ranks() -> dict[bytes, int]:
    """GPT-2's mergeable ranks through tiktoken's own downloader (hash-checked, cached).

    tiktoken fetches the same two data-gym files from OpenAI and caches them in
    $TIKTOKEN_CACHE_DIR (default: a data-gym-cache folder in the temp directory).
    """
    from tiktoken_ext.openai_public import gpt2

    return gpt2()["mergeable_ranks"]


@dataclass(frozen=True)
class Tokenizer:
    """GPT-2 BPE: text <-> token ids (a thin wrapper over a tiktoken Encoding)."""

    encoding: tiktoken.Encoding
    source: str  # where the vocabulary came from, for messages and logs
    eos_id: int = EOS_ID
    vocab_size: int = VOCAB_SIZE

    def encode(self, text: str) -> list[int]:
        """Ids of `text`, treated as ordinary text (see the module docstring)."""
        return self.encoding.encode_ordinary(text)

    def encode_batch(self, texts: Sequence[str], num_threads: int | None = None) -> list[list[int]]:
        """`encode` for many texts, split into one contiguous chunk per thread.

        tiktoken releases the GIL while encoding, so threads run in parallel. Its own
        `encode_ordinary_batch` submits one task per text, which for short texts like
        E2E's costs more than the encoding (measured 6x slower than a plain loop).
        """
        texts = list(texts)
        threads = min(num_threads or os.cpu_count() or 1, max(1, len(texts) // 1000))
        if threads <= 1:
            return [self.encoding.encode_ordinary(text) for text in texts]
        size = -(-len(texts) // threads)
        chunks = [texts[start:start + size] for start in range(0, len(texts), size)]
        with ThreadPoolExecutor(len(chunks)) as pool:
            parts = pool.map(lambda chunk: [self.encoding.encode_ordinary(text) for text in chunk], chunks)
            return [ids for part in parts for ids in part]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids`; a byte sequence cut mid-character decodes to U+FFFD, as in GPT-2."""
        return self.encoding.decode(list(ids), errors="replace")


def load_tokenizer(vocab_dir: str | os.PathLike | None = None, *, allow_download: bool = True) -> Tokenizer:
    """GPT-2's tokenizer from `vocab_dir`, else $NLG_VOCAB_DIR, else tiktoken's download.

    Nothing is downloaded when a directory is given (by argument or environment). With
    neither, tiktoken fetches the files (once; it caches them) unless `allow_download`
    is False; failing that, the error says how to provide the files.
    """
    if vocab_dir is None and os.environ.get(VOCAB_ENV):
        vocab_dir = os.environ[VOCAB_ENV]
    if vocab_dir is not None:
        ranks, source = read_vocab(vocab_dir), str(vocab_dir)
    else:
        if not allow_download:
            raise InputError(f"no GPT-2 vocabulary: {HOW_TO_GET_VOCAB}")
        try:
            ranks, source = download_ranks(), "tiktoken gpt2 download"
        except Exception as error:  # no network, proxy, hash mismatch...: all mean "give us the files"
            reason = f"{type(error).__name__}: {error}"[:300]  # requests errors run long
            raise InputError(f"no GPT-2 vocabulary (download failed: {reason}); "
                             f"{HOW_TO_GET_VOCAB}") from None
    encoding = tiktoken.Encoding(
        name="gpt2",
        pat_str=GPT2_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={EOS: EOS_ID},
        explicit_n_vocab=VOCAB_SIZE,
    )
    return Tokenizer(encoding=encoding, source=source)
