"""What WebNLG and DART share: RDF-style triples -> text, one XML form, one reference layout.

Both come as json (the form the LoRA paper's converters read) and as the WebNLG challenge's
XML, which DART's release also uses:

    <entry category="Airport" eid="Id1" size="1">
      <modifiedtripleset><mtriple>Aarhus | leaderName | Jacob_Bundsgaard</mtriple></modifiedtripleset>
      <lex comment="good" lid="Id1">The leader of Aarhus is Jacob Bundsgaard.</lex>
    </entry>

Both readers give `Entry` records; `make_pairs` turns them into pairs as the paper's
format_converting_{webnlg,dart}.py do: the context is each triple as `subject : property :
object`, joined by ` | `, and every kept text of the entry is one pair. XML text is read
without the file's layout (`xml_text`): an indented file gives the pairs of a compact one.

Where the paper's converters are silently wrong or crash, these readers are strict instead:
a missing key, a triple without exactly three string parts, an entry without triples or an
unreadable file stop with `FILE: entry N (eid ...)` or `FILE:LINE`. One thing is not an
error: an empty (blank) text. DART's own test release has one (dart-v1.1.1-full-test.xml,
entry 116, its second annotation), and the paper's converter turns it into a pair with an
empty completion, an empty reference at decoding time and an empty training target. Here it
is left out and counted in the stage's summary, so the official files can still be used.

References (`nlg decode --ref_type webnlg|dart`), as the paper's gpt2_decode.py writes them
for GenerationEval (`eval.py -R DIR/reference -nr N`): a folder holding `reference0` ...
`reference{N-1}`, each with one line per distinct context in first-occurrence order: line i
of reference{k} is the k-th reference of context i, or its first one when it has k or
fewer (so every file has every context); references past the N-th are left out, as the
paper does, and counted in a warning. The hypothesis file has one line per context.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nlg.datasets import Dataset, Decoded, RawSplit
from nlg.datasets.download import fetch
from nlg.datasets.recipe import PaperResult, Recipe, ScoringRecipe
from nlg.files import InputError, atomic_dir, atomic_write, check_outputs, parse_json, strip_bom
from nlg.pairs import TextPair

XML_SEPARATOR = " | "  # between subject, property and object in an <mtriple>
REFERENCE_FILE = re.compile(r"reference\d+")


@dataclass(frozen=True)
class Text:
    """One human text of an entry: WebNLG's <lex> (comment "good", "toFix"), DART's annotation."""

    comment: str | None  # WebNLG's comment; DART's source
    text: str


@dataclass(frozen=True)
class Entry:
    """One triple set and its texts."""

    where: str  # "FILE: entry N (eid X)", for messages
    number: int  # 1-based position in its file
    category: str | None
    triples: tuple[tuple[str, str, str], ...]
    texts: tuple[Text, ...]


def entry_where(source: str, number: int, eid: object = None) -> str:
    return f"{source}: entry {number}" + (f" (eid {eid})" if eid is not None else "")


def context_text(triples: tuple[tuple[str, str, str], ...], lower_property: bool = False) -> str:
    """`s : p : o | s : p : o ...`, the paper's context string."""
    return " | ".join(f"{s} : {p.lower() if lower_property else p} : {o}" for s, p, o in triples)


def check_triples(triples: object, where: str, as_parts: Callable[[object], object]) -> tuple[tuple[str, str, str], ...]:
    """Triples as (s, p, o) string tuples; `as_parts` turns one raw triple into its parts."""
    if not isinstance(triples, list) or not triples:
        raise InputError(f"{where}: no triples")
    checked = []
    for index, triple in enumerate(triples, start=1):
        parts = as_parts(triple)
        if not isinstance(parts, list | tuple) or len(parts) != 3 or not all(isinstance(p, str) for p in parts):
            raise InputError(f"{where}: triple {index} is not three strings (subject, property, object): {triple!r}")
        checked.append((parts[0], parts[1], parts[2]))
    return tuple(checked)


# -- files ---------------------------------------------------------------------------------


def load_json(data: bytes, source: str) -> object:
    """A raw json file's value (`nlg.files.parse_json`: within its limits, no lone surrogate)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InputError(f"{source}: not valid UTF-8 ({error.reason} at byte {error.start})") from None
    return parse_json(text, source)


def read_file(path: Path) -> bytes:
    """A raw json or XML file's bytes, without a UTF-8 byte-order mark (`strip_bom`)."""
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    return strip_bom(path.read_bytes(), path)


XML_SPACE = " \t\r\n"  # XML's white space (its S production); other Unicode spaces are text


def xml_text(text: str | None) -> str:
    """An element's text as the release means it, whatever the file's layout.

    A run of XML white space that holds a line break is layout (a pretty-printed or
    hand-indented file puts the text on lines of its own): it becomes one space, and nothing
    at the start or end of the text. A run within one line is kept: the releases hold such
    runs as data ("Warm  or cold" in WebNLG's train and test triples, tabs and double spaces
    in 668 of DART's dev texts), and their json forms keep them verbatim (WebNLG's converter
    copies the XML text; DART's dev json equals its XML), so XML and json give the same pairs.
    The release files are compact (no line break inside any text), so they read unchanged.
    White space at the very start or end of a text is kept in a compact file (one DART dev
    text, 13 DART test triples); in an indented one it joins the layout and is dropped.
    """
    text = text or ""
    if "\n" not in text:
        return text
    lines = text.split("\n")
    # each line break with the white space around it is one run: strip both sides of it
    parts = [lines[0].rstrip(XML_SPACE), *(line.strip(XML_SPACE) for line in lines[1:-1]),
             lines[-1].lstrip(XML_SPACE)]
    return " ".join(part for part in parts if part)


def xml_name(value: str | None) -> str | None:
    """An attribute that names something (a category, an eid, a lexicalisation's comment):
    every run of white space one space, none at the ends, so `category=" Airport"` (or one
    broken across lines) is still the seen category Airport and `comment="good "` still good."""
    return None if value is None else " ".join(re.split(f"[{XML_SPACE}]+", value)).strip(" ")


def _xml_entry(element: ET.Element, where: str, number: int) -> Entry:
    tripleset = element.findall("modifiedtripleset")
    if len(tripleset) != 1:
        raise InputError(f"{where}: expected one <modifiedtripleset>, found {len(tripleset)}")
    raw = [xml_text(mtriple.text) for mtriple in tripleset[0].findall("mtriple")]
    triples = check_triples(raw, where, lambda text: text.split(XML_SEPARATOR))
    texts = []
    for lex in element.findall("lex"):
        if len(lex):
            raise InputError(f"{where}: <lex> has child elements (<{lex[0].tag}>); this reader knows "
                             "the WebNLG 2017 and DART form, where <lex> holds the text itself")
        texts.append(Text(xml_name(lex.get("comment")), xml_text(lex.text)))
    return Entry(where, number, xml_name(element.get("category")), triples, tuple(texts))


def read_xml(data: bytes, source: str) -> list[Entry]:
    """Every <entry> of a WebNLG-style XML file, in file order."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as error:
        line, _ = error.position
        raise InputError(f"{source}:{line}: not well-formed XML ({error})") from None
    entries = []
    for number, element in enumerate(root.iter("entry"), start=1):
        entries.append(_xml_entry(element, entry_where(source, number, xml_name(element.get("eid"))), number))
    if not entries:
        raise InputError(f"{source}: no <entry> elements")
    return entries


def json_entries(obj: object, source: str, parse: Callable[[object, str, int], Entry]) -> list[Entry]:
    """`parse(record, where, number)` over a json list of records; an empty list is an error."""
    if not isinstance(obj, list) or not obj:
        raise InputError(f"{source}: expected a non-empty list of entries")
    return [parse(record, entry_where(source, number), number) for number, record in enumerate(obj, start=1)]


def require(record: object, keys: tuple[str, ...], where: str) -> dict:
    """`record` as a dict holding `keys`; else an error naming the missing ones."""
    if not isinstance(record, dict):
        raise InputError(f"{where}: expected an object, got {type(record).__name__}")
    missing = [key for key in keys if key not in record]
    if missing:
        raise InputError(f"{where}: missing {', '.join(repr(k) for k in missing)}")
    return record


# -- raw folders ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SplitFiles:
    """Where one split lives in a raw folder, in each form (patterns relative to the folder)."""

    split: str
    json: str
    xml: str  # a file name or a glob pattern

    def xml_alternative(self) -> str:
        """The XML form for messages: ".xml" when it only swaps the json file's suffix."""
        return ".xml" if self.xml == str(Path(self.json).with_suffix(".xml")) else self.xml


def find_split(raw_dir: Path, files: SplitFiles) -> tuple[str, list[Path], str] | None:
    """("json" | "xml", paths, description) for the form present; json (the paper's) first."""
    json_path = raw_dir / files.json
    xml_paths = sorted(p for p in raw_dir.glob(files.xml) if p.is_file())  # only the pattern is a pattern
    if json_path.is_file():
        note = f" (the XML form beside it, {files.xml}, not read)" if xml_paths else ""
        return "json", [json_path], f"{json_path}{note}"
    if xml_paths:
        count = f" ({len(xml_paths)} files)" if len(xml_paths) > 1 else ""
        return "xml", xml_paths, f"{raw_dir / files.xml}{count}"
    return None


def _count(n: int, noun: str, plural: str | None = None) -> str:
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def make_pairs(entries: list[Entry], keep: Callable[[Text], bool], cate: Callable[[Entry], bool | None],
               lower_property: bool = False, not_kept: str = "") -> tuple[list[TextPair], tuple[str, ...]]:
    """One pair per kept, non-blank text of each entry; what was left out, one line per kind.

    `not_kept` names the texts `keep` refuses, for the summary (e.g. "not marked good").
    """
    pairs, refused, empty, bare = [], 0, [], 0
    for entry in entries:
        context = context_text(entry.triples, lower_property)
        before = len(pairs)
        for text in entry.texts:
            if not keep(text):
                refused += 1
            elif not text.text.strip():
                empty.append(entry.where)
            else:
                pairs.append(TextPair(context, text.text, entry.number, cate(entry)))
        bare += len(pairs) == before
    left_out = []
    if refused:
        left_out.append(f"{_count(refused, 'text')} {not_kept} (as the paper does)")
    if empty:
        left_out.append(f"{_count(len(empty), 'empty text')} (the first in {empty[0]})")
    if bare:
        left_out.append(f"{_count(bare, 'entry', 'entries')} with no text kept, so without a pair")
    return pairs, tuple(left_out)


@dataclass(frozen=True)
class TriplesFormat:
    """One triples dataset's raw folder: where each split lives, how its json form reads, and
    where the paper's json files are downloaded from.

    The XML form is the same for every such dataset (`read_xml`); `to_pairs` applies the
    dataset's own rules (which texts to keep, the category flag, the property's case).
    """

    files: tuple[SplitFiles, ...]
    read_json: Callable[[bytes, str], list[Entry]]
    to_pairs: Callable[[list[Entry]], tuple[list[TextPair], tuple[str, ...]]]
    download_url: str  # the paper's json files, with a {name} field (files.json)
    manual: str  # where to get the files by hand, for the message when the download fails

    def read_pairs(self, form: str, paths: list[Path]) -> tuple[list[TextPair], tuple[str, ...]]:
        reader = self.read_json if form == "json" else read_xml
        return self.to_pairs([entry for path in paths for entry in reader(read_file(path), str(path))])

    def read_raw_dir(self, raw_dir: Path) -> list[RawSplit]:
        """Every split found in raw_dir, in either form."""
        splits = []
        for files in self.files:
            found = find_split(Path(raw_dir), files)
            if found is None:
                continue
            form, paths, description = found
            pairs, left_out = self.read_pairs(form, paths)
            if not pairs:
                raise InputError(f"{description}: no pairs")
            splits.append(RawSplit(files.split, description, pairs, left_out))
        return splits

    def check_download(self, data: bytes, address: str) -> None:
        pairs, _ = self.to_pairs(self.read_json(data, address))
        if not pairs:
            raise InputError(f"{address}: no pairs")

    def download(self, raw_dir: str | os.PathLike, url: str | None = None, timeout: float = 60.0) -> list[Path]:
        """Fetch the paper's json files of the splits in neither form in raw_dir (each checked
        before anything is written); `url` has a {name} field, download_url by default."""
        missing = [files.json for files in self.files if find_split(Path(raw_dir), files) is None]
        wanted = {name: (url or self.download_url).format(name=name) for name in missing}
        return fetch(Path(raw_dir), wanted, self.check_download, self.manual, timeout)

    def dataset(self, name: str, title: str, raw_env: str, recipe: Recipe) -> Dataset:
        """The dataset these files make, with a folder of references for GenerationEval."""
        return Dataset(
            name=name,
            title=title,
            raw_env=raw_env,
            raw_files=", ".join(f"{files.json} or {files.xml_alternative()}" for files in self.files),
            read_raw=self.read_raw_dir,
            download=self.download,
            write_references=write_reference_folder,
            reference_folder=True,
            recipe=recipe,
        )


# -- references ----------------------------------------------------------------------------


def reference_columns(references: list[list[str]], ref_num: int) -> tuple[list[list[str]], int, int]:
    """`ref_num` columns of one line per context; (columns, contexts cut, references cut)."""
    columns = [[refs[k] if k < len(refs) else refs[0] for refs in references] for k in range(ref_num)]
    over = [len(refs) - ref_num for refs in references if len(refs) > ref_num]
    return columns, len(over), sum(over)


def _check_folder(ref_dir: Path, pred_path: Path) -> None:
    """The reference folder is replaced as a whole: refuse one that holds anything else (and,
    with `check_outputs`, a file in its place or the hypothesis file inside it)."""
    check_outputs(inputs={}, outputs={"--output_pred_file": pred_path}, replaced={"--output_ref_file": ref_dir})
    if ref_dir.is_dir():
        others = sorted(p.name for p in ref_dir.iterdir() if not REFERENCE_FILE.fullmatch(p.name))
        if others:
            raise InputError(f"{ref_dir}: holds other files than reference0, reference1, ... ({', '.join(others[:3])}); "
                             "the folder is replaced as a whole, so give a new or empty one")


def write_reference_folder(decoded: Decoded, ref_dir: Path, pred_path: Path, ref_num: int | None) -> list[str]:
    """reference0..reference{ref_num-1} in ref_dir, the hypothesis file at pred_path."""
    if ref_num is None or ref_num < 1:
        raise InputError(f"--ref_num must be at least 1, got {ref_num}")
    ref_dir, pred_path = Path(ref_dir), Path(pred_path)
    _check_folder(ref_dir, pred_path)
    columns, contexts_cut, refs_cut = reference_columns(decoded.references, ref_num)
    with atomic_dir(ref_dir) as folder, atomic_write(pred_path) as preds:
        for k, column in enumerate(columns):
            (folder / f"reference{k}").write_text("".join(line + "\n" for line in column), encoding="utf-8")
        preds.write(decoded.prediction_text())
    if not contexts_cut:
        return []
    return [f"{contexts_cut} of {len(decoded.references)} contexts have more than {ref_num} references: "
            f"{_count(refs_cut, 'reference')} beyond the first {ref_num} left out of {ref_dir} (as the paper's decoder does)"]


# -- scoring -------------------------------------------------------------------------------

GENERATION_EVAL_METRICS = ("BLEU", "METEOR", "TER")


def generation_eval(ref_type: str, subsets: tuple[str, ...] = ("all",)) -> ScoringRecipe:
    """How the paper decodes and scores both datasets (its README's commands): `gpt2_decode.py
    --ref_num 6 --tokenize --lower`, then GenerationEval's `eval.py -nr 6 -m bleu,meteor,ter`."""
    return ScoringRecipe(ref_type=ref_type, ref_num=6, tokenize=True, lower=True, subsets=subsets,
                         suite="webnlg", metrics=GENERATION_EVAL_METRICS)


def generation_eval_result(model_card: str, subset: str, bleu: float, meteor: float, ter: float,
                           source: str) -> PaperResult:
    """A paper result as its WebNLG and DART tables print it: BLEU in percent, METEOR and TER as fractions."""
    scores = dict(zip(GENERATION_EVAL_METRICS, (bleu, meteor, ter), strict=True))
    return PaperResult(model_card, subset, scores, frozenset({"BLEU"}), source)
