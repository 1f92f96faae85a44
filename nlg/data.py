"""Data stage: a dataset's raw files -> formatted jsonl -> GPT-2 token jsonl, for every split.

    nlg data {e2e,webnlg,dart} --raw-dir DIR --out-dir data/NAME [--vocab DIR] [--download]

What DIR holds is the dataset's business (nlg/datasets/NAME.py: E2E's `{split}.txt`,
WebNLG's json files or its XML release, DART's json or XML files); what comes out is the same
for all (nlg/pairs.py), per split found (train, valid, test):

    {split}_formatted.jsonl  {"context": "...", "completion": "..."} (+ "cate" for WebNLG)
    {split}.jsonl            {"context": bpe(context) + [50256], "completion": bpe(" " + completion) + [50256]}

byte for byte the files of the paper's format_converting_NAME.py + gpt2_encode.py.

Every split is read, checked and encoded before any output is written, and the outputs are
renamed into place together, so a failed run leaves the previous outputs (or none), never a
mix. The summary says, per split, which files were read and what was left out of them.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from nlg import datasets
from nlg.cli import run_main, spellings
from nlg.datasets import Dataset, RawSplit
from nlg.files import InputError, atomic_files, check_outputs
from nlg.pairs import Pair, encode_pairs, jsonl_line
from nlg.tokenizer import Tokenizer, load_tokenizer


@dataclass(frozen=True)
class SplitSummary:
    split: str
    pairs: int
    contexts: int  # distinct context strings
    tokens: int  # context + completion, eos included
    max_context: int
    max_completion: int
    max_total: int
    source: str
    left_out: tuple[str, ...]


def summarize(raw: RawSplit, pairs: list[Pair]) -> SplitSummary:
    return SplitSummary(
        split=raw.split,
        pairs=len(pairs),
        contexts=len({p.context for p in raw.pairs}),
        tokens=sum(len(p.context) + len(p.completion) for p in pairs),
        max_context=max(len(p.context) for p in pairs),
        max_completion=max(len(p.completion) for p in pairs),
        max_total=max(len(p.context) + len(p.completion) for p in pairs),
        source=raw.source,
        left_out=raw.left_out,
    )


def read_splits(dataset: Dataset, raw_dir: str | os.PathLike) -> list[RawSplit]:
    """Every split of `dataset` in raw_dir; none at all is an error saying what was looked for."""
    splits = dataset.read_raw(Path(raw_dir))
    if not splits:
        raise InputError(f"{raw_dir}: none of {dataset.raw_files} there "
                         f"(give --raw-dir or ${dataset.raw_env}, or add --download)")
    return splits


def prepare(dataset: Dataset, raw_dir: str | os.PathLike, out_dir: str | os.PathLike, tokenizer: Tokenizer,
            progress: bool | None = None) -> list[SplitSummary]:
    """Write `{split}_formatted.jsonl` and `{split}.jsonl` for every split of `dataset` in `raw_dir`.

    `progress=None` shows a bar only on a terminal.
    """
    out_dir = Path(out_dir)
    splits = read_splits(dataset, raw_dir)
    encoded = {}
    with tqdm(total=sum(len(s.pairs) for s in splits), unit="pair", desc="encoding", file=sys.stderr,
              disable=None if progress is None else not progress) as bar:
        for raw in splits:
            encoded[raw.split] = encode_pairs(raw.pairs, tokenizer, bar)

    # Every file goes to a temporary name first; the renames happen together at the end.
    with atomic_files() as open_file:
        for raw in splits:
            formatted_path, encoded_path = output_files(out_dir, raw.split)
            open_file(formatted_path).writelines(jsonl_line(p) for p in raw.pairs)
            open_file(encoded_path).writelines(jsonl_line(p) for p in encoded[raw.split])
    return [summarize(raw, encoded[raw.split]) for raw in splits]


def output_files(out_dir: str | os.PathLike, *splits: str) -> list[Path]:
    """`{split}_formatted.jsonl` and `{split}.jsonl` in out_dir, for `splits` (default: all)."""
    return [Path(out_dir) / name for split in splits or datasets.SPLITS
            for name in (f"{split}_formatted.jsonl", f"{split}.jsonl")]


def format_summary(summaries: list[SplitSummary]) -> str:
    header = f"{'split':<6} {'pairs':>7} {'contexts':>8} {'tokens':>10} {'max ctx':>8} {'max compl':>10} {'max total':>10}"
    rows = [f"{s.split:<6} {s.pairs:>7} {s.contexts:>8} {s.tokens:>10} {s.max_context:>8} "
            f"{s.max_completion:>10} {s.max_total:>10}" for s in summaries]
    for s in summaries:
        rows.append(f"{s.split}: read {s.source}")
        rows += [f"{s.split}: left out {what}" for what in s.left_out]
    return "\n".join([header, *rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nlg data", description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", choices=datasets.names(), help="which dataset to prepare")
    parser.add_argument(*spellings("raw_dir"), dest="raw_dir", default=None,
                        help="folder with the raw files (default: the dataset's variable, $E2E_RAW_DIR, "
                             "$WEBNLG_RAW_DIR or $DART_RAW_DIR; with --download and neither given: "
                             "the --out-dir folder)")
    parser.add_argument(*spellings("out_dir"), dest="out_dir", default=None,
                        help="where the jsonl files go (default: data/NAME)")
    parser.add_argument("--vocab", default=None,
                        help="folder with GPT-2's encoder.json and vocab.bpe (default: $NLG_VOCAB_DIR, "
                             "else tiktoken downloads them)")
    parser.add_argument("--download", action="store_true",
                        help="first fetch the paper's raw files of the splits missing from the raw folder")
    args = parser.parse_args(argv)
    dataset = datasets.get(args.dataset)
    out_dir = args.out_dir or f"data/{dataset.name}"

    raw_dir = args.raw_dir or os.environ.get(dataset.raw_env) or (out_dir if args.download else None)
    if raw_dir is None:
        parser.error(f"give --raw-dir DIR (or set ${dataset.raw_env}), or --download")
    # The outputs ({split}.jsonl, {split}_formatted.jsonl) never share a name with the raw
    # files (.txt, .json, .xml), and a rename replaces a link instead of writing through it, so
    # no raw file can be overwritten: what is left to check is where the outputs go.
    check_outputs(inputs={}, outputs={"--out-dir": output_files(out_dir)}, folders={"--out-dir": out_dir})
    tokenizer = load_tokenizer(args.vocab)  # before downloading: a missing vocabulary fails fast
    if args.download:
        for path in dataset.download(Path(raw_dir)):
            print(f"downloaded {path}")

    start = time.perf_counter()
    summaries = prepare(dataset, raw_dir, out_dir, tokenizer)
    seconds = time.perf_counter() - start
    pairs = sum(s.pairs for s in summaries)
    print(format_summary(summaries))
    print(f"{pairs} pairs in {seconds:.2f}s ({pairs / seconds:,.0f} pairs/s), vocabulary {tokenizer.source}")
    print(f"wrote {', '.join(f'{s.split}.jsonl {s.split}_formatted.jsonl' for s in summaries)} in {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
