"""WebNLG 2017 (DBpedia triples -> English text), as the LoRA paper runs it.

A raw folder holds, per split, either form (the json one is read when both are there):

    split   the paper's json   the WebNLG 2017 challenge release (XML)
    train   train.json         train/*triples/*.xml  (files read in sorted path order)
    valid   dev.json           dev/*triples/*.xml
    test    test.json          test/testdata_with_lex.xml

The json files are the paper's (examples/NLG/data/webnlg_challenge_2017): `{"entries": [{"1":
{"category", "lexicalisations": [{"comment", "lex", ...}], "modifiedtripleset": [{"subject",
"property", "object"}], ...}}, {"2": ...}, ...]}`. The XML release gives the same records in
the same order (tested on the dev set, where both forms are at hand).

As the paper's format_converting_webnlg.py: every lexicalisation whose comment is "good" is
one pair (the others, "toFix", are left out and counted), the context is the modified
triples as `subject : property : object` joined by ` | `, and each formatted line carries
`"cate": true` when the entry's category is one of the ten seen in training (SEEN), else
false. `nlg decode --filter seen|unseen` selects on it.

Stricter than the paper (see also nlg.datasets.triples): entry N of the json must hold the
key "N" (the paper looks entries up by position and crashes otherwise), every entry needs a
category, and a lexicalisation without a comment or text is an error, not a KeyError.
"""

from __future__ import annotations

from dataclasses import replace

from nlg import methods
from nlg.datasets import triples
from nlg.datasets.recipe import Baseline, BeamRecipe, PaperResult, Recipe, TrainRecipe
from nlg.datasets.triples import Entry, Text
from nlg.files import InputError
from nlg.pairs import TextPair

RAW_ENV = "WEBNLG_RAW_DIR"
SEEN = frozenset({"Airport", "Astronaut", "Building", "City", "ComicsCharacter", "Food", "Monument",
                  "SportsTeam", "University", "WrittenWork"})
FILES = (
    triples.SplitFiles("train", "train.json", "train/*triples/*.xml"),
    triples.SplitFiles("valid", "dev.json", "dev/*triples/*.xml"),
    triples.SplitFiles("test", "test.json", "test/testdata_with_lex.xml"),
)
DOWNLOAD_URL = "https://raw.githubusercontent.com/microsoft/LoRA/main/examples/NLG/data/webnlg_challenge_2017/{name}"
TRIPLE_KEYS = ("subject", "property", "object")


def _json_triple(triple: object) -> object:
    return [triple.get(key) for key in TRIPLE_KEYS] if isinstance(triple, dict) else triple


def _json_entry(item: object, where: str, number: int) -> Entry:
    key = str(number)
    if not isinstance(item, dict) or key not in item:
        raise InputError(f"{where}: expected an object with the key {key!r} (entries are numbered from 1, in order)")
    if isinstance(item[key], dict) and "xml_id" in item[key]:
        where = f"{where} (eid {item[key]['xml_id']})"
    record = triples.require(item[key], ("category", "lexicalisations", "modifiedtripleset"), where)
    if not isinstance(record["category"], str):
        raise InputError(f"{where}: category must be a string, got {record['category']!r}")
    tripleset = triples.check_triples(record["modifiedtripleset"], where, _json_triple)
    lexicalisations = record["lexicalisations"]
    if not isinstance(lexicalisations, list):
        raise InputError(f"{where}: lexicalisations must be a list")
    texts = []
    for index, lex in enumerate(lexicalisations, start=1):
        if not isinstance(lex, dict) or not isinstance(lex.get("comment"), str) or not isinstance(lex.get("lex"), str):
            raise InputError(f"{where}: lexicalisation {index} needs string keys comment and lex, got {lex!r}")
        texts.append(Text(lex["comment"], lex["lex"]))
    return Entry(where, number, record["category"], tripleset, tuple(texts))


def read_json(data: bytes, source: str) -> list[Entry]:
    """Entries of the paper's json form."""
    obj = triples.load_json(data, source)
    if not isinstance(obj, dict) or "entries" not in obj:
        raise InputError(f"{source}: expected an object {{\"entries\": [...]}}")
    return triples.json_entries(obj["entries"], source, _json_entry)


def to_pairs(entries: list[Entry]) -> tuple[list[TextPair], tuple[str, ...]]:
    """The paper's pairs: good lexicalisations only, `cate` from the category."""
    for entry in entries:
        if entry.category is None:
            raise InputError(f"{entry.where}: no category (needed for the seen/unseen flag)")
    return triples.make_pairs(entries, keep=lambda text: text.comment == "good", cate=lambda entry: entry.category in SEEN,
                      not_kept="not marked good")


MANUAL = ("train.json, dev.json, test.json (the LoRA repo's examples/NLG/data/webnlg_challenge_2017/) "
          "or the WebNLG 2017 XML release's train/, dev/ and test/testdata_with_lex.xml")
FORMAT = triples.TriplesFormat(FILES, read_json, to_pairs, DOWNLOAD_URL, MANUAL)
download = FORMAT.download  # (raw_dir, url=None, timeout=60.0): the paper's json files of the missing splits


LORA_PARAMS = {"gpt2.md": "0.35M", "gpt2.lg": "0.77M"}  # as the paper's tables print LoRA's size

# The paper's WebNLG test scores, GPT-2 with LoRA (its appendix table for WebNLG; the
# repository's README has the BLEU columns).
PAPER = tuple(
    replace(triples.generation_eval_result(card, subset, bleu, meteor, ter, "LoRA paper, Table 14 (WebNLG)"),
            params=LORA_PARAMS[card])
    for card, subset, bleu, meteor, ter in (
        ("gpt2.md", "unseen", 46.7, 0.38, 0.46), ("gpt2.md", "seen", 62.1, 0.44, 0.33),
        ("gpt2.md", "all", 55.3, 0.41, 0.39),
        ("gpt2.lg", "unseen", 48.4, 0.39, 0.45), ("gpt2.lg", "seen", 64.0, 0.45, 0.32),
        ("gpt2.lg", "all", 57.0, 0.42, 0.38),
    )
)

# The baselines of Table 14, GPT-2 M and L: BLEU, METEOR and TER on the unseen, seen and all
# categories, parameters as printed (each method holds its own rows: nlg.methods, Method.paper_rows).
PAPER += tuple(
    PaperResult(card, subset, scores, frozenset({"BLEU"}), source or "LoRA paper, Table 14 (WebNLG)", method=method,
                params=params, spread=spread, copied=copied, external=source is not None)
    for method, card, subset, params, scores, spread, copied, source in methods.paper_rows("webnlg")
)

# Training and beam settings are E2E's (the paper's README: "follow steps 1 and 2 from E2E");
# the baselines' lr / epochs / batch are Li & Liang's for WebNLG.
RECIPE = Recipe(train=TrainRecipe(), beam=BeamRecipe(),
                scoring=triples.generation_eval("webnlg", ("all", "seen", "unseen")), paper=PAPER,
                baselines={key: Baseline(**values) for key, values in methods.baselines("webnlg").items()})

DATASET = FORMAT.dataset("webnlg", "WebNLG 2017", RAW_ENV, RECIPE)
