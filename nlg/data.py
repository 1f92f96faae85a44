"""E2E data stage: the paper's raw text pairs -> formatted jsonl -> GPT-2 token jsonl.

    nlg data e2e --raw-dir DIR --out-dir data/e2e [--vocab DIR] [--download]

Input, `{split}.txt` for split in train/valid/test (as distributed with the LoRA code),
one pair per line, meaning representation `||` reference:

    name : The Vaults | Type : pub | price : more than £ 30||The Vaults pub near ...

Output, per split present (the same files as the paper's create_datasets.sh makes):

    {split}_formatted.jsonl  {"context": "name : The Vaults | ...", "completion": "The Vaults pub ..."}
    {split}.jsonl            {"context": bpe(context) + [50256], "completion": bpe(" " + completion) + [50256]}

The completion is encoded with one leading space because it follows the context in the
training sequence, and GPT-2 words carry their leading space. 50256 (<|endoftext|>)
ends both halves: after the context it marks where generation starts, after the
completion it is the learned stop. Both files are written as the paper's scripts write
them (Python's json.dumps defaults, so non-ASCII is escaped: "\\u00a3"), and are byte for
byte identical to theirs on the released data.

Where we are stricter than the paper's converter (which splits on '||' and keeps
`items[0]` and `items[1]` of `line.strip()`): each side is stripped on its own (the
released files have no spaces around '||', so nothing changes there); a line with no
'||', more than one, or an empty side is an error naming FILE:LINE instead of a crash
or silently dropped text; blank lines are skipped. Every split is read, checked and
encoded before any output is written, and outputs are renamed into place together, so a
failed run leaves the previous outputs (or none), never a mix.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from nlg.cli import run_main, spellings
from nlg.files import InputError, atomic_write, read_jsonl, read_lines
from nlg.tokenizer import VOCAB_SIZE, Tokenizer, load_tokenizer

SPLITS = ("train", "valid", "test")
SEPARATOR = "||"
RAW_ENV = "E2E_RAW_DIR"
DOWNLOAD_URL = "https://raw.githubusercontent.com/microsoft/LoRA/main/examples/NLG/data/e2e/{split}.txt"
CHUNK = 4096  # pairs per encode call; sets how often the progress bar moves


@dataclass(frozen=True)
class TextPair:
    """One meaning representation and one human reference, as text."""

    context: str
    completion: str
    line: int  # line number in the file it came from


@dataclass(frozen=True)
class Pair:
    """One pair as GPT-2 token ids, each half ending in 50256."""

    context: list[int]
    completion: list[int]
    line: int


# -- raw text -------------------------------------------------------------------------


def parse_pairs(lines: list[str], source: str) -> list[TextPair]:
    """Pairs of the paper's `context||completion` lines; blank lines are skipped."""
    pairs = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{source}:{number}"
        parts = line.split(SEPARATOR)
        if len(parts) != 2:
            what = "none" if len(parts) == 1 else f"{len(parts) - 1}"
            raise InputError(f"{where}: expected one '{SEPARATOR}' between meaning representation and reference, found {what}")
        context, completion = parts[0].strip(), parts[1].strip()
        if not context:
            raise InputError(f"{where}: empty meaning representation before '{SEPARATOR}'")
        if not completion:
            raise InputError(f"{where}: empty reference after '{SEPARATOR}'")
        pairs.append(TextPair(context, completion, number))
    if not pairs:
        raise InputError(f"{source}: no pairs (an E2E file has one `context{SEPARATOR}reference` per line)")
    return pairs


def read_raw(path: str | os.PathLike) -> list[TextPair]:
    """Pairs of a raw `{split}.txt`; errors name FILE:LINE."""
    return parse_pairs(read_lines(path), str(path))


# -- encoding -------------------------------------------------------------------------


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
    return json.dumps({"context": pair.context, "completion": pair.completion}) + "\n"


# -- reading the outputs back (the training, beam and decode stages use these) ---------


def _record(number: int, obj: object, where: str) -> dict:
    if not isinstance(obj, dict) or set(obj) != {"context", "completion"}:
        keys = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise InputError(f"{where}:{number}: expected an object with keys context and completion, got {keys}")
    return obj


def load_formatted(path: str | os.PathLike) -> list[TextPair]:
    """Text pairs of a `{split}_formatted.jsonl`; both halves non-empty strings."""
    pairs = []
    for number, obj in read_jsonl(path):
        record = _record(number, obj, str(path))
        for key in ("context", "completion"):
            if not isinstance(record[key], str) or not record[key].strip():
                raise InputError(f"{path}:{number}: {key} must be a non-empty string")
        pairs.append(TextPair(record["context"], record["completion"], number))
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


# -- download ---------------------------------------------------------------------------


def download_raw(raw_dir: str | os.PathLike, splits: tuple[str, ...] = SPLITS,
                 url: str | None = None, timeout: float = 60.0) -> list[Path]:
    """Fetch the splits missing from `raw_dir` (the LoRA repo's copies of E2E).

    `url` has a `{split}` field; the default is DOWNLOAD_URL.

    All files are fetched and checked to parse before any is written; each is then
    written atomically. Files already present are kept as they are.
    """
    raw_dir = Path(raw_dir)
    fetched = {}
    for split in splits:
        if (raw_dir / f"{split}.txt").exists():
            continue
        address = (url or DOWNLOAD_URL).format(split=split)
        try:
            with urllib.request.urlopen(address, timeout=timeout) as response:
                data = response.read()
        except (urllib.error.URLError, OSError, ValueError) as error:
            reason = getattr(error, "reason", error)
            raise InputError(
                f"could not download {address} ({reason}); without network, put "
                f"{', '.join(s + '.txt' for s in splits)} (the LoRA repo's examples/NLG/data/e2e/) "
                f"into {raw_dir} yourself and run without --download") from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise InputError(f"{address}: not UTF-8 text ({error.reason} at byte {error.start})") from None
        parse_pairs(text.splitlines(), address)  # refuse an error page or a truncated file
        fetched[split] = data
    written = []
    for split, data in fetched.items():
        with atomic_write(raw_dir / f"{split}.txt", "wb") as handle:
            handle.write(data)
        written.append(raw_dir / f"{split}.txt")
    return written


# -- the stage ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SplitSummary:
    split: str
    pairs: int
    contexts: int  # distinct meaning representations
    tokens: int  # context + completion, eos included
    max_context: int
    max_completion: int
    max_total: int


def summarize(split: str, texts: list[TextPair], pairs: list[Pair]) -> SplitSummary:
    return SplitSummary(
        split=split,
        pairs=len(pairs),
        contexts=len({p.context for p in texts}),
        tokens=sum(len(p.context) + len(p.completion) for p in pairs),
        max_context=max(len(p.context) for p in pairs),
        max_completion=max(len(p.completion) for p in pairs),
        max_total=max(len(p.context) + len(p.completion) for p in pairs),
    )


def prepare_e2e(raw_dir: str | os.PathLike, out_dir: str | os.PathLike, tokenizer: Tokenizer,
                progress: bool | None = None) -> list[SplitSummary]:
    """Write `{split}_formatted.jsonl` and `{split}.jsonl` for every split in `raw_dir`.

    `progress=None` shows a bar only on a terminal.
    """
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    splits = [s for s in SPLITS if (raw_dir / f"{s}.txt").is_file()]
    if not splits:
        raise InputError(f"{raw_dir}: none of {', '.join(s + '.txt' for s in SPLITS)} there "
                         f"(give --raw-dir or ${RAW_ENV}, or add --download)")
    texts = {split: read_raw(raw_dir / f"{split}.txt") for split in splits}

    total = sum(len(t) for t in texts.values())
    encoded = {}
    with tqdm(total=total, unit="pair", desc="encoding", disable=None if progress is None else not progress,
              file=sys.stderr) as bar:
        for split in splits:
            encoded[split] = encode_pairs(texts[split], tokenizer, bar)

    # Every file goes to a temporary name first; the renames happen together at the end.
    with contextlib.ExitStack() as stack:
        for split in splits:
            formatted = stack.enter_context(atomic_write(out_dir / f"{split}_formatted.jsonl"))
            formatted.writelines(jsonl_line(p) for p in texts[split])
            tokens = stack.enter_context(atomic_write(out_dir / f"{split}.jsonl"))
            tokens.writelines(jsonl_line(p) for p in encoded[split])
    return [summarize(split, texts[split], encoded[split]) for split in splits]


def format_summary(summaries: list[SplitSummary]) -> str:
    header = f"{'split':<6} {'pairs':>7} {'MRs':>6} {'tokens':>10} {'max ctx':>8} {'max compl':>10} {'max total':>10}"
    rows = [f"{s.split:<6} {s.pairs:>7} {s.contexts:>6} {s.tokens:>10} {s.max_context:>8} "
            f"{s.max_completion:>10} {s.max_total:>10}" for s in summaries]
    return "\n".join([header, *rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nlg data", description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", choices=["e2e"], help="which dataset to prepare")
    parser.add_argument(*spellings("raw_dir"), dest="raw_dir", default=os.environ.get(RAW_ENV),
                        help=f"folder with train/valid/test.txt (default: ${RAW_ENV}; "
                             "with --download and neither given: the --out-dir folder)")
    parser.add_argument(*spellings("out_dir"), dest="out_dir", default="data/e2e",
                        help="where the jsonl files go (default: data/e2e)")
    parser.add_argument("--vocab", default=None,
                        help="folder with GPT-2's encoder.json and vocab.bpe (default: $NLG_VOCAB_DIR, "
                             "else tiktoken downloads them)")
    parser.add_argument("--download", action="store_true",
                        help="first fetch the splits missing from the raw folder from the LoRA repository")
    args = parser.parse_args(argv)

    raw_dir = args.raw_dir or (args.out_dir if args.download else None)
    if raw_dir is None:
        parser.error(f"give --raw-dir DIR (or set ${RAW_ENV}), or --download")
    tokenizer = load_tokenizer(args.vocab)  # before downloading: a missing vocabulary fails fast
    if args.download:
        for path in download_raw(raw_dir):
            print(f"downloaded {path}")

    start = time.perf_counter()
    summaries = prepare_e2e(raw_dir, args.out_dir, tokenizer)
    seconds = time.perf_counter() - start
    pairs = sum(s.pairs for s in summaries)
    print(format_summary(summaries))
    print(f"{pairs} pairs in {seconds:.2f}s ({pairs / seconds:,.0f} pairs/s), vocabulary {tokenizer.source}")
    print(f"wrote {', '.join(f'{s.split}.jsonl {s.split}_formatted.jsonl' for s in summaries)} in {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
