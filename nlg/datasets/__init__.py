"""The datasets `nlg` knows, each behind one small interface, looked up by name.

    from nlg import datasets
    webnlg = datasets.get("webnlg")          # a Dataset
    splits = webnlg.read_raw(raw_dir)        # [RawSplit], the splits found, in SPLITS order
    webnlg.recipe.beam.args()                # the paper's `nlg beam` flags for it

Each dataset is one module, `nlg/datasets/NAME.py`, that defines `DATASET`: its raw readers,
its download, the reference files its scorer reads, and the paper's recipe (`recipe.py`).
`nlg data NAME` and `nlg decode --ref_type NAME` look it up here; the pair format they all
produce is `nlg.pairs`. Adding a dataset means adding a module and its name to `MODULES`.

Modules are imported on lookup only, so importing this package costs nothing and never
imports torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nlg.datasets.recipe import Recipe
from nlg.pairs import TextPair

SPLITS = ("train", "valid", "test")  # the output splits, in this order everywhere
MODULES = {"e2e": "nlg.datasets.e2e", "webnlg": "nlg.datasets.webnlg", "dart": "nlg.datasets.dart"}


@dataclass(frozen=True)
class RawSplit:
    """One split as read from a dataset's raw files.

    `left_out` says, one line per kind, what in the source did not become a pair and why
    (e.g. WebNLG's lexicalisations not marked "good"); nothing is dropped without a line here.
    """

    split: str  # one of SPLITS
    source: str  # what was read, for messages
    pairs: list[TextPair]
    left_out: tuple[str, ...] = ()


@dataclass(frozen=True)
class Decoded:
    """Post-processed texts for the reference writers: one entry per distinct context, in order."""

    references: list[list[str]]  # every reference of each context, in input order
    predictions: list[str]

    def prediction_text(self) -> str:
        """The hypothesis file every scorer reads: one line per context."""
        return "".join(prediction + "\n" for prediction in self.predictions)


@dataclass(frozen=True)
class Dataset:
    """One benchmark.

    read_raw(raw_dir)     every split found in raw_dir, read and checked (InputError naming
                          FILE:LINE or FILE: entry N on bad input); [] when none is there
    download(raw_dir)     fetch the raw files of the splits missing from raw_dir (checked
                          before anything is written); returns the paths written
    write_references(decoded, ref_path, pred_path, ref_num)
                          write the files the dataset's scorer reads, atomically (all or
                          none); ref_num is --ref_num, else the recipe's (None for E2E,
                          whose file holds every reference); returns warnings to print;
                          with reference_folder, ref_path is a folder it replaces as a whole
    """

    name: str
    title: str
    raw_env: str  # environment variable naming the raw folder
    raw_files: str  # what a raw folder holds, for messages
    read_raw: Callable[[Path], list[RawSplit]]
    download: Callable[[Path], list[Path]]
    write_references: Callable[[Decoded, Path, Path, int | None], list[str]]
    recipe: Recipe
    reference_folder: bool = False  # write_references replaces ref_path as a folder (else writes a file)


def names() -> tuple[str, ...]:
    return tuple(MODULES)


def get(name: str) -> Dataset:
    """The dataset called `name`; a ValueError lists the known names."""
    if name not in MODULES:
        raise ValueError(f"unknown dataset {name!r} (known: {', '.join(MODULES)})")
    return importlib.import_module(MODULES[name]).DATASET
