"""nlg.datasets.dart: DART's json (the paper's input) and XML give the paper's files, byte for byte."""

import json
import re

import pytest

from nlg.datasets import dart
from nlg.files import InputError
from nlg.pairs import TextPair, jsonl_line

DEV_JSON, DEV_XML, TEST_XML = ("dart-v1.1.1-full-dev.json", "dart-v1.1.1-full-dev.xml", "dart-v1.1.1-full-test.xml")


def paper_converter(data: list) -> str:
    """What format_converting_dart.py writes for a parsed json file (its rules, restated)."""
    lines = []
    for entry in data:
        context = " | ".join(f"{s} : {p.lower()} : {o}" for s, p, o in entry["tripleset"])
        lines += [json.dumps({"context": context, "completion": a["text"]}) + "\n" for a in entry["annotations"]]
    return "".join(lines)


def formatted(split) -> str:
    return "".join(jsonl_line(pair) for pair in split.pairs)


def only(raw_dir, names, tmp_path, write):
    """A raw folder holding just `names` from raw_dir."""
    for name in names:
        write(tmp_path / "raw" / name, (raw_dir / name).read_bytes())
    (split,) = dart.DATASET.read_raw(tmp_path / "raw")
    return split


@pytest.fixture(scope="module")
def dev_json(dart_raw_dir, tmp_path_factory):
    raw = tmp_path_factory.mktemp("dart-json")
    (raw / DEV_JSON).write_bytes((dart_raw_dir / DEV_JSON).read_bytes())
    (split,) = dart.DATASET.read_raw(raw)
    return split


def test_json_dev_is_the_papers_converter_output(dev_json, dart_raw_dir):
    expected = paper_converter(json.loads((dart_raw_dir / DEV_JSON).read_text(encoding="utf-8")))
    assert formatted(dev_json) == expected
    assert len(expected.splitlines()) == 6980 and dev_json.left_out == ()


def test_hand_checked_lines(dev_json):
    """Properties lower-cased (JORNADA_OR_OTHER in the file), non-ASCII escaped, no cate."""
    lines = formatted(dev_json).splitlines()
    assert lines[0] == ('{"context": "Mars Hill College : joined : 1973 | Mars Hill College : location : '
                        'Mars Hill, North Carolina", "completion": "A school from Mars Hill, North Carolina, joined in 1973."}')
    assert lines[9] == ('{"context": "1983-1984 season : jornada_or_other : 2 | 2 : away_team : Am\\u00e9rica | '
                        '2 : home_team : Chivas", "completion": "Chivas played against Am\\u00e9rica in the 1983-1984 season."}')
    assert lines[-1] == ('{"context": "Wildwood : eattype : coffee shop | Wildwood : pricerange : moderate | '
                         'Wildwood : near : Ranch", "completion": "The Wildwood is an affordable coffee shop located in Ranch."}')


def test_xml_and_json_agree_on_dev(dev_json, dart_raw_dir, tmp_path, write):
    xml_dev = only(dart_raw_dir, [DEV_XML], tmp_path, write)
    assert xml_dev.source == str(tmp_path / "raw" / DEV_XML)
    assert formatted(xml_dev) == formatted(dev_json)


def test_test_release_has_one_empty_annotation_left_out(dart_raw_dir, tmp_path, write):
    test = only(dart_raw_dir, [TEST_XML], tmp_path, write)
    assert (test.split, len(test.pairs), len({p.context for p in test.pairs})) == ("test", 12551, 4159)
    assert test.left_out == (f"1 empty text (the first in {tmp_path / 'raw' / TEST_XML}: entry 116 (eid Id116))",)
    assert [p.completion for p in test.pairs if p.line == 116] == [
        "reserved (previously G721) has 1 channel and 8000 Hz clock rate"]


ENTRY = {"tripleset": [["A", "B_C", "D"]], "annotations": [{"source": "x", "text": "A b c D."}]}


@pytest.mark.parametrize("second,reason", [
    ({"tripleset": [["A", "B"]], "annotations": []}, r": entry 2: triple 1 is not three strings"),
    ({"tripleset": [["A", "B", None]], "annotations": []}, r": entry 2: triple 1 is not three strings"),
    ({"tripleset": [], "annotations": []}, r": entry 2: no triples"),
    ({"tripleset": [["A", "B", "C"]]}, r": entry 2: missing 'annotations'"),
    ({"annotations": []}, r": entry 2: missing 'tripleset'"),
    ({"tripleset": [["A", "B", "C"]], "annotations": [{"source": "x"}]}, r": entry 2: annotation 1 needs a string key text"),
    ("entry", r": entry 2: expected an object, got str"),
])
def test_bad_json_entries_name_file_and_entry(tmp_path, write, second, reason):
    path = write(tmp_path / "dart-v1.1.1-full-train.json", json.dumps([ENTRY, second]))
    with pytest.raises(InputError, match="^" + re.escape(str(path)) + reason):
        dart.DATASET.read_raw(tmp_path)


def test_entries_without_annotations_are_counted(tmp_path, write):
    write(tmp_path / "dart-v1.1.1-full-test.json", json.dumps([ENTRY, {"tripleset": [["E", "F", "G"]], "annotations": []}]))
    (split,) = dart.DATASET.read_raw(tmp_path)
    assert split.pairs == [TextPair("A : b_c : D", "A b c D.", 1)]
    assert split.left_out == ("1 entry with no text kept, so without a pair",)


def test_download_fetches_json_for_splits_in_neither_form(tmp_path, write):
    site, raw = tmp_path / "site", tmp_path / "raw"
    for split in ("train", "dev", "test"):
        write(site / f"dart-v1.1.1-full-{split}.json", json.dumps([ENTRY]))
    write(raw / DEV_XML, '<benchmark><entries><entry><modifiedtripleset><mtriple>A | b | C</mtriple>'
                         '</modifiedtripleset><lex>A b C.</lex></entry></entries></benchmark>')
    assert dart.download(raw, url=site.as_uri() + "/{name}") == [
        raw / "dart-v1.1.1-full-train.json", raw / "dart-v1.1.1-full-test.json"]
    assert [(s.split, len(s.pairs)) for s in dart.DATASET.read_raw(raw)] == [("train", 1), ("valid", 1), ("test", 1)]


def test_download_unreachable_says_what_to_do(tmp_path):
    with pytest.raises(InputError, match=r"could not download http://127\.0\.0\.1:9/dart-v1\.1\.1-full-train\.json "
                                         r".*github\.com/Yale-LILY/dart"):
        dart.download(tmp_path, url="http://127.0.0.1:9/{name}", timeout=5)
    assert list(tmp_path.iterdir()) == []
    assert dart.DOWNLOAD_URL.format(name=DEV_JSON) == (
        "https://raw.githubusercontent.com/microsoft/LoRA/main/examples/NLG/data/dart/dart-v1.1.1-full-dev.json")
