"""Data-stage throughput: `nlg data e2e` encoding vs the paper's pure-Python BPE, in one run.

    python bench/data_throughput.py [--shared ../shared]

Encodes every context and completion of the shared E2E valid+test splits (9,365 pairs) with:

  paper     the GPT-2 encoder algorithm the paper's gpt2_encode.py runs (pair-rank BPE in pure
            Python with a per-word cache), written here from the algorithm; one cold run
  hf        Hugging Face tokenizers' GPT2Tokenizer (Rust) built from the same vocabulary
  tiktoken  tiktoken's own encode_ordinary_batch
  ours      nlg.tokenizer.Tokenizer.encode_batch (tiktoken, chunked across threads)
  stage     nlg.data.prepare: read, check, encode and write all four output files

All must produce identical ids. Prints lines/s, the ratio to the paper baseline and the time the
42,061-line train split would take at that rate. Then the whole stage on the WebNLG 2017 XML
release (train, dev and test: 105 XML files, 25,211 pairs), read from the shared folder.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import regex

from nlg import datasets
from nlg.data import prepare
from nlg.datasets.e2e import read_raw
from nlg.tokenizer import GPT2_PATTERN, byte_alphabet, load_tokenizer

TRAIN_LINES = 42061


def paper_encoder(vocab_dir: Path) -> Callable[[str], list[int]]:
    """GPT-2's original BPE: merge the lowest-ranked adjacent pair until none is in the table."""
    encoder = json.loads((vocab_dir / "encoder.json").read_text(encoding="utf-8"))
    merges = (vocab_dir / "vocab.bpe").read_text(encoding="utf-8").split("\n")[1:-1]
    ranks = {tuple(line.split()): rank for rank, line in enumerate(merges)}
    alphabet = byte_alphabet()
    pattern = regex.compile(GPT2_PATTERN)
    cache: dict[str, list[int]] = {}

    def bpe(word: str) -> list[int]:
        if word in cache:
            return cache[word]
        parts = list(word)
        while len(parts) > 1:
            pairs = [(ranks.get((parts[i], parts[i + 1]), float("inf")), i) for i in range(len(parts) - 1)]
            rank, first = min(pairs)
            if rank == float("inf"):
                break
            a, b = parts[first], parts[first + 1]
            merged, i = [], 0
            while i < len(parts):
                if i < len(parts) - 1 and parts[i] == a and parts[i + 1] == b:
                    merged.append(a + b)
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        cache[word] = [encoder[p] for p in parts]
        return cache[word]

    def encode(text: str) -> list[int]:
        return [i for w in pattern.findall(text) for i in bpe("".join(alphabet[b] for b in w.encode()))]

    return encode


def best_time(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path,
                        default=Path(os.environ.get("NLG_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared")))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    vocab_dir, raw_dir = args.shared / "vocab" / "gpt2", args.shared / "data" / "e2e"
    pairs = read_raw(raw_dir / "valid.txt") + read_raw(raw_dir / "test.txt")
    texts = [text for pair in pairs for text in (pair.context, " " + pair.completion)]
    tokenizer = load_tokenizer(vocab_dir)

    paper = paper_encoder(vocab_dir)
    timings: dict[str, float] = {}
    timings["paper"], expected = best_time(lambda: [paper(t) for t in texts], repeats=1)
    try:
        from transformers import GPT2Tokenizer

        encoder = json.loads((vocab_dir / "encoder.json").read_text(encoding="utf-8"))
        merges = [tuple(line.split()) for line in
                  (vocab_dir / "vocab.bpe").read_text(encoding="utf-8").split("\n")[1:-1]]
        hf = GPT2Tokenizer(vocab=encoder, merges=merges)
        timings["hf"], got = best_time(lambda: hf(texts)["input_ids"], args.repeats)
        assert got == expected, "HF tokenizers disagrees"
    except ImportError:
        print("(transformers not installed: no HF tokenizers row)")
    timings["tiktoken"], got = best_time(lambda: tokenizer.encoding.encode_ordinary_batch(texts), args.repeats)
    assert got == expected, "tiktoken disagrees"
    timings["ours"], got = best_time(lambda: tokenizer.encode_batch(texts), args.repeats)
    assert got == expected, "nlg tokenizer disagrees"
    with tempfile.TemporaryDirectory() as out:
        timings["stage"], _ = best_time(lambda: prepare(datasets.get("e2e"), raw_dir, out, tokenizer, progress=False),
                                        args.repeats)

    n = len(pairs)
    print(f"{n} pairs ({len(texts)} texts) from {raw_dir}; identical ids from every encoder")
    print(f"{'method':<10} {'seconds':>8} {'pairs/s':>10} {'vs paper':>9} {'42k train split':>16}")
    for name, seconds in timings.items():
        print(f"{name:<10} {seconds:8.3f} {n / seconds:10,.0f} {timings['paper'] / seconds:8.1f}x "
              f"{TRAIN_LINES / n * seconds:15.2f}s")

    webnlg_dir = args.shared / "data" / "webnlg-2017"
    if webnlg_dir.is_dir():
        with tempfile.TemporaryDirectory() as out:
            seconds, summaries = best_time(
                lambda: prepare(datasets.get("webnlg"), webnlg_dir, out, tokenizer, progress=False), args.repeats)
        pairs = sum(s.pairs for s in summaries)
        print(f"webnlg stage, XML release ({', '.join(f'{s.split} {s.pairs}' for s in summaries)}): "
              f"{seconds:.2f}s, {pairs / seconds:,.0f} pairs/s")


if __name__ == "__main__":
    main()
