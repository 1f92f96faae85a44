"""DART v1.1.1 (open-domain triples -> text), as the LoRA paper runs it.

A raw folder holds, per split, either form (the json one is read when both are there):

    split   json (the paper's input)        XML (DART's release, WebNLG's format)
    train   dart-v1.1.1-full-train.json     dart-v1.1.1-full-train.xml
    valid   dart-v1.1.1-full-dev.json       dart-v1.1.1-full-dev.xml
    test    dart-v1.1.1-full-test.json      dart-v1.1.1-full-test.xml

The json files are a list of `{"tripleset": [[subject, property, object], ...],
"annotations": [{"source", "text"}, ...], ...}`; the XML files give the same records in the
same order (tested on the dev set) as <entry> elements with <mtriple>s and <lex>s.

As the paper's format_converting_dart.py: the context is the triples as `subject : property
: object` joined by ` | ` with the property lower-cased (Python's str.lower), every
annotation is one pair whatever its source, and the formatted lines carry no `cate`.
Entries with the same triples give the same context, so decoding gathers their references
(the dev set's 2,768 triple sets are 2,721 distinct contexts).

Stricter than the paper: see nlg.datasets.triples (missing keys and malformed triples are
errors; an empty annotation, of which DART's test release has one, is left out and counted).
"""

from __future__ import annotations

from dataclasses import replace

from nlg import methods
from nlg.datasets import triples
from nlg.datasets.recipe import Baseline, BeamRecipe, PaperResult, Recipe, TrainRecipe
from nlg.datasets.triples import Entry, Text
from nlg.files import InputError
from nlg.pairs import TextPair

RAW_ENV = "DART_RAW_DIR"
FILES = tuple(triples.SplitFiles(split, f"dart-v1.1.1-full-{name}.json", f"dart-v1.1.1-full-{name}.xml")
              for split, name in (("train", "train"), ("valid", "dev"), ("test", "test")))
DOWNLOAD_URL = "https://raw.githubusercontent.com/microsoft/LoRA/main/examples/NLG/data/dart/{name}"


def _json_entry(record: object, where: str, number: int) -> Entry:
    record = triples.require(record, ("tripleset", "annotations"), where)
    tripleset = triples.check_triples(record["tripleset"], where, lambda triple: triple)
    annotations = record["annotations"]
    if not isinstance(annotations, list):
        raise InputError(f"{where}: annotations must be a list")
    texts = []
    for index, annotation in enumerate(annotations, start=1):
        if not isinstance(annotation, dict) or not isinstance(annotation.get("text"), str):
            raise InputError(f"{where}: annotation {index} needs a string key text, got {annotation!r}")
        texts.append(Text(annotation.get("source"), annotation["text"]))
    return Entry(where, number, None, tripleset, tuple(texts))


def read_json(data: bytes, source: str) -> list[Entry]:
    """Entries of DART's json form (the paper's input)."""
    return triples.json_entries(triples.load_json(data, source), source, _json_entry)


def to_pairs(entries: list[Entry]) -> tuple[list[TextPair], tuple[str, ...]]:
    """The paper's pairs: every annotation, the property lower-cased, no category flag."""
    return triples.make_pairs(entries, keep=lambda text: True, cate=lambda entry: None, lower_property=True)


MANUAL = ("dart-v1.1.1-full-{train,dev,test}.json (the LoRA repo's examples/NLG/data/dart/, or "
          "github.com/Yale-LILY/dart data/v1.1.1/, which also has the .xml form)")
FORMAT = triples.TriplesFormat(FILES, read_json, to_pairs, DOWNLOAD_URL, MANUAL)
download = FORMAT.download  # (raw_dir, url=None, timeout=60.0): the paper's json files of the missing splits


# The paper's DART test scores, GPT-2 with LoRA (its appendix table for DART; the repository's
# README has the BLEU column).
PAPER = (
    replace(triples.generation_eval_result("gpt2.md", "all", 47.1, 0.39, 0.46, "LoRA paper, Table 13 (DART)"),
            params="0.35M"),
    replace(triples.generation_eval_result("gpt2.lg", "all", 47.5, 0.39, 0.45, "LoRA paper, Table 13 (DART)"),
            params="0.77M"),
)
# The baselines of the same table (Table 13): BLEU, METEOR, TER; parameters as printed (each
# method holds its own rows: nlg.methods, Method.paper_rows).
PAPER += tuple(
    PaperResult(card, subset, scores, frozenset({"BLEU"}), source or "LoRA paper, Table 13 (DART)", method=method,
                params=params, spread=spread, copied=copied, external=source is not None)
    for method, card, subset, params, scores, spread, copied, source in methods.paper_rows("dart")
)

# As E2E's recipe except no weight decay, no LoRA dropout and no label smoothing (the paper's
# hyperparameter table).
RECIPE = Recipe(train=TrainRecipe(weight_decay=0.0, lora_dropout=0.0, label_smooth=0.0), beam=BeamRecipe(),
                scoring=triples.generation_eval("dart"), paper=PAPER,
                baselines={key: Baseline(**values) for key, values in methods.baselines("dart").items()})

DATASET = FORMAT.dataset("dart", "DART v1.1.1", RAW_ENV, RECIPE)
