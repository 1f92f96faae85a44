"""E2E NLG Challenge (restaurant meaning representations -> text), as the LoRA paper runs it.

Raw files, `{split}.txt` for split in train/valid/test (as distributed with the LoRA code,
examples/NLG/data/e2e), one pair per line, meaning representation `||` reference:

    name : The Vaults | Type : pub | price : more than £ 30||The Vaults pub near ...

The paper's format_converting_e2e.py splits each line on '||' and keeps `items[0]` and
`items[1]` of `line.strip()`. Here each side is stripped on its own (the released files have
no spaces around '||', so nothing changes there); a line with no '||', more than one, or an
empty side is an error naming FILE:LINE instead of a crash or silently dropped text; blank
lines are skipped.

References (`nlg decode --ref_type e2e`): one file holding, for each distinct context in
order of first occurrence, its references one per line and then an empty line (so the file
ends with an empty line), as the paper's gpt2_decode.py writes it and the E2E challenge's
measure_scores.py reads it; the prediction file has one line per context.
"""

from __future__ import annotations

import os
from pathlib import Path

from nlg import methods
from nlg.datasets import SPLITS, Dataset, Decoded, RawSplit
from nlg.datasets.download import fetch
from nlg.datasets.recipe import (
    Baseline,
    BeamRecipe,
    PaperResult,
    Recipe,
    ScoringRecipe,
    TrainRecipe,
)
from nlg.files import InputError, atomic_files, read_lines
from nlg.pairs import TextPair

SEPARATOR = "||"
RAW_ENV = "E2E_RAW_DIR"
DOWNLOAD_URL = "https://raw.githubusercontent.com/microsoft/LoRA/main/examples/NLG/data/e2e/{split}.txt"


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


def read_raw_dir(raw_dir: Path) -> list[RawSplit]:
    """Every `{split}.txt` present in raw_dir."""
    paths = [(split, Path(raw_dir) / f"{split}.txt") for split in SPLITS]
    return [RawSplit(split, str(path), read_raw(path)) for split, path in paths if path.is_file()]


def _check_download(data: bytes, address: str) -> None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InputError(f"{address}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    parse_pairs(text.splitlines(), address)


def download(raw_dir: str | os.PathLike, splits: tuple[str, ...] = SPLITS, url: str | None = None,
             timeout: float = 60.0) -> list[Path]:
    """Fetch the splits missing from `raw_dir` (the LoRA repo's copies of E2E).

    `url` has a `{split}` field; the default is DOWNLOAD_URL. Files already present are kept.
    """
    missing = [split for split in splits if not (Path(raw_dir) / f"{split}.txt").exists()]
    files = {f"{split}.txt": (url or DOWNLOAD_URL).format(split=split) for split in missing}
    manual = f"{', '.join(s + '.txt' for s in splits)} (the LoRA repo's examples/NLG/data/e2e/)"
    return fetch(raw_dir, files, _check_download, manual, timeout)


def write_references(decoded: Decoded, ref_path: Path, pred_path: Path, ref_num: int | None) -> list[str]:
    """The grouped reference file and the prediction file."""
    if ref_num is not None:
        raise InputError("--ref_num does not apply to --ref_type e2e: its reference file holds every "
                         "reference of each context")
    with atomic_files() as open_file:
        refs, preds = open_file(ref_path), open_file(pred_path)
        refs.write("".join("".join(ref + "\n" for ref in group) + "\n" for group in decoded.references))
        preds.write(decoded.prediction_text())
    return []


# The paper's numbers on the E2E test set, GPT-2 with LoRA (Table 3). The table prints BLEU,
# METEOR and ROUGE-L in percent; metric names are `nlg score`'s.
_PERCENT = frozenset({"BLEU", "METEOR", "ROUGE_L"})
_METRICS = ("BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr")


def _row(card: str, method: str, params: str, scores: tuple[float, ...], spread: tuple[float, ...] = (),
         copied: bool = False) -> PaperResult:
    """A Table 3 row: its five scores in the table's order (and their ± over 3 seeds, if printed)."""
    return PaperResult(card, "all", dict(zip(_METRICS, scores, strict=True)), _PERCENT, "LoRA paper, Table 3",
                       method=method, params=params, spread=dict(zip(_METRICS, spread, strict=bool(spread))),
                       copied=copied)


# LoRA's rows first (paper_result's default), then the baselines' (each method holds its own:
# nlg.methods, Method.paper_rows); `copied` is the paper's `*` (taken from Li & Liang, 2021, not rerun).
PAPER = (
    _row("gpt2.md", methods.DEFAULT, "0.35M", (70.4, 8.85, 46.8, 71.8, 2.53)),
    _row("gpt2.lg", methods.DEFAULT, "0.77M", (70.4, 8.89, 46.8, 72.0, 2.47)),
    *(PaperResult(card, subset, scores, _PERCENT, source or "LoRA paper, Table 3", method=method, params=params,
                  spread=spread, copied=copied, external=source is not None)
      for method, card, subset, params, scores, spread, copied, source in methods.paper_rows("e2e")),
)

# The baselines' training, Li & Liang's (lr, epochs, batch), as the LoRA paper took it.
# (each method holds its own: nlg.methods, Method.baseline_recipes)
BASELINES = {key: Baseline(**values) for key, values in methods.baselines("e2e").items()}

# Length penalty 0.8 is what the paper's published E2E command uses (examples/NLG/README.md);
# its hyperparameter table prints 0.9 for E2E.
RECIPE = Recipe(
    train=TrainRecipe(),
    beam=BeamRecipe(),
    scoring=ScoringRecipe(ref_type="e2e", ref_num=None, tokenize=False, lower=False, subsets=("all",),
                          suite="e2e", metrics=("BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr"), pymteval=True),
    paper=PAPER,
    baselines=BASELINES,
)

DATASET = Dataset(
    name="e2e",
    title="E2E NLG Challenge",
    raw_env=RAW_ENV,
    raw_files=", ".join(f"{split}.txt" for split in SPLITS),
    read_raw=read_raw_dir,
    download=download,
    write_references=write_references,
    recipe=RECIPE,
)
