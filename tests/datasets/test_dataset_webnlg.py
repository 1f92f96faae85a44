"""nlg.datasets.webnlg: the paper's json and the 2017 XML release give the paper's files, byte for byte."""

import json
import re

import pytest

from nlg.data import prepare
from nlg.datasets import webnlg
from nlg.datasets.triples import read_xml
from nlg.files import InputError
from nlg.pairs import TextPair, jsonl_line


def paper_converter(data: dict) -> str:
    """What format_converting_webnlg.py writes for a parsed json file (its rules, restated)."""
    lines = []
    for i, item in enumerate(data["entries"]):
        entry = item[str(i + 1)]
        context = " | ".join(f"{t['subject']} : {t['property']} : {t['object']}" for t in entry["modifiedtripleset"])
        for lex in entry["lexicalisations"]:
            if lex["comment"] == "good":
                lines.append(json.dumps({"context": context, "completion": lex["lex"],
                                         "cate": entry["category"] in webnlg.SEEN}) + "\n")
    return "".join(lines)


def formatted(split) -> str:
    return "".join(jsonl_line(pair) for pair in split.pairs)


@pytest.fixture(scope="module")
def dev_json(webnlg_json_dir):
    (split,) = webnlg.DATASET.read_raw(webnlg_json_dir)
    return split


def test_json_dev_is_the_papers_converter_output(dev_json, webnlg_json_dir):
    expected = paper_converter(json.loads((webnlg_json_dir / "dev.json").read_text(encoding="utf-8")))
    assert formatted(dev_json) == expected
    assert len(expected.splitlines()) == 2258


def test_hand_checked_lines(dev_json):
    lines = formatted(dev_json).splitlines()
    assert lines[0] == ('{"context": "Aarhus : leaderName : Jacob_Bundsgaard", '
                        '"completion": "The leader of Aarhus is Jacob Bundsgaard.", "cate": true}')
    assert lines[948] == (
        '{"context": "Adolfo_Su\\u00e1rez_Madrid\\u2013Barajas_Airport : runwayLength : 4100.0 | '
        'Adolfo_Su\\u00e1rez_Madrid\\u2013Barajas_Airport : location : Madrid | '
        'Adolfo_Su\\u00e1rez_Madrid\\u2013Barajas_Airport : runwayName : \\"14L/32R\\"", '
        '"completion": "The 14L/32R runway of the Adolfo Suarez Madrid - Barajas Airport in Madrid has a length of 4100.0.", '
        '"cate": true}')
    assert lines[-1].startswith('{"context": "Visvesvaraya_Technological_University : city : Belgaum | Acharya_')
    assert lines[-1].endswith('its director is Dr. G. P. Prabhukumar.", "cate": true}')


def test_xml_release_and_json_agree_on_dev(dev_json, webnlg_xml_dir, tmp_path, write):
    """Only the dev split is in both forms; the XML files are read in sorted path order."""
    raw = tmp_path / "raw"
    for path in sorted((webnlg_xml_dir / "dev").glob("*triples/*.xml")):
        write(raw / "dev" / path.parent.name / path.name, path.read_bytes())
    (xml_dev,) = webnlg.DATASET.read_raw(raw)
    assert xml_dev.source == f"{raw / 'dev/*triples/*.xml'} (52 files)"
    assert formatted(xml_dev) == formatted(dev_json)
    assert xml_dev.left_out == dev_json.left_out == ("10 texts not marked good (as the paper does)",
                                                     "1 entry with no text kept, so without a pair")


def test_encoded_dev_is_the_papers_encoding(webnlg_json_dir, tmp_path, tokenizer, hf_gpt2):
    """gpt2_encode.py: bpe(context) + [50256], bpe(" " + completion) + [50256], context and completion only."""
    prepare(webnlg.DATASET, webnlg_json_dir, tmp_path, tokenizer, progress=False)
    expected = "".join(
        json.dumps({"context": hf_gpt2.encode(r["context"]) + [50256],
                    "completion": hf_gpt2.encode(" " + r["completion"]) + [50256]}) + "\n"
        for r in map(json.loads, (tmp_path / "valid_formatted.jsonl").read_text(encoding="utf-8").splitlines()))
    assert (tmp_path / "valid.jsonl").read_text(encoding="utf-8") == expected


# -- bad input -----------------------------------------------------------------------------

ENTRY = {"category": "Food", "lexicalisations": [{"comment": "good", "lex": "Bacon is food."}],
         "modifiedtripleset": [{"subject": "Bacon", "property": "type", "object": "Food"}], "xml_id": "Id7"}


def with_entry(**changes) -> dict:
    entry = {**ENTRY, **changes}
    return {"entries": [{"1": ENTRY}, {"2": {k: v for k, v in entry.items() if v is not None}}]}


@pytest.mark.parametrize("data,reason", [
    (with_entry(modifiedtripleset=[{"subject": "A", "property": "b"}]),
     r"entry 2 \(eid Id7\): triple 1 is not three strings \(subject, property, object\)"),
    (with_entry(modifiedtripleset=[{"subject": "A", "property": "b", "object": 3}]),
     r"entry 2 \(eid Id7\): triple 1 is not three strings"),
    (with_entry(modifiedtripleset=[]), r"entry 2 \(eid Id7\): no triples"),
    (with_entry(lexicalisations=None), r"entry 2 \(eid Id7\): missing 'lexicalisations'"),
    (with_entry(category=None, xml_id=None), r"entry 2: missing 'category'"),
    (with_entry(lexicalisations=[{"lex": "No comment."}]),
     r"entry 2 \(eid Id7\): lexicalisation 1 needs string keys comment and lex"),
    ({"entries": [{"1": ENTRY}, {"3": ENTRY}]}, r"entry 2: expected an object with the key '2'"),
    ({"entries": []}, "expected a non-empty list of entries"),
    ([ENTRY], r"expected an object \{\"entries\": \[\.\.\.\]\}"),
])
def test_bad_json_entries_name_file_and_entry(tmp_path, write, data, reason):
    path = write(tmp_path / "test.json", json.dumps(data))
    with pytest.raises(InputError, match="^" + re.escape(f"{path}: ") + reason):
        webnlg.DATASET.read_raw(tmp_path)


def test_unreadable_json_names_the_line(tmp_path, write):
    write(tmp_path / "dev.json", '{"entries": [\n  {"1": }\n]}')
    with pytest.raises(InputError, match=r"dev\.json:2: not valid JSON"):
        webnlg.DATASET.read_raw(tmp_path)
    write(tmp_path / "dev.json", b'{"entries": "\xff"}')
    with pytest.raises(InputError, match=r"dev\.json: not valid UTF-8"):
        webnlg.DATASET.read_raw(tmp_path)


XML_ENTRY = ('<entry category="{category}" eid="Id{n}" size="1"><modifiedtripleset>'
             '<mtriple>{triple}</mtriple></modifiedtripleset>{lex}</entry>')


def xml_file(*entries: str) -> str:
    return f"<benchmark><entries>{''.join(entries)}</entries></benchmark>"


def good_xml_entry(n: int, triple: str = "Bacon | type | Food", lex: str = '<lex comment="good" lid="Id1">Bacon.</lex>',
                   category: str = "Food") -> str:
    return XML_ENTRY.format(category=category, n=n, triple=triple, lex=lex)


@pytest.mark.parametrize("second,reason", [
    (good_xml_entry(2, triple="Bacon | type"), r": entry 2 \(eid Id2\): triple 1 is not three strings"),
    (good_xml_entry(2, triple="Bacon | type | Food | x"), r": entry 2 \(eid Id2\): triple 1 is not three strings"),
    (good_xml_entry(2, lex='<lex comment="good"><text>Bacon.</text></lex>'), r": entry 2 \(eid Id2\): <lex> has child elements"),
    ('<entry category="Food" eid="Id2"><lex comment="good">x</lex></entry>', r": entry 2 \(eid Id2\): expected one <modifiedtripleset>, found 0"),
    (good_xml_entry(2).replace(' category="Food"', ""), r": entry 2 \(eid Id2\): no category"),
    ("<entry eid='Id2'", r":1: not well-formed XML"),
])
def test_bad_xml_entries_name_file_and_entry(tmp_path, write, second, reason):
    path = write(tmp_path / "test" / "testdata_with_lex.xml", xml_file(good_xml_entry(1), second))
    with pytest.raises(InputError, match="^" + re.escape(str(path)) + reason):
        webnlg.DATASET.read_raw(tmp_path)


def test_xml_texts_kept_and_left_out(tmp_path, write):
    """good kept, toFix left out and counted, blank left out and named, unseen category flagged."""
    write(tmp_path / "test" / "testdata_with_lex.xml", xml_file(
        good_xml_entry(1, lex='<lex comment="good">Bacon.</lex><lex comment="toFix">bacon</lex>'),
        good_xml_entry(2, lex='<lex comment="good"> </lex>', category="Artist"),
        good_xml_entry(3, triple="Ab | c | D", lex='<lex comment="good">Ab c D.</lex>', category="Artist")))
    (split,) = webnlg.DATASET.read_raw(tmp_path)
    assert split.split == "test"
    assert split.pairs == [TextPair("Bacon : type : Food", "Bacon.", 1, True), TextPair("Ab : c : D", "Ab c D.", 3, False)]
    assert split.left_out == ("1 text not marked good (as the paper does)",
                              f"1 empty text (the first in {tmp_path / 'test' / 'testdata_with_lex.xml'}: entry 2 (eid Id2))",
                              "1 entry with no text kept, so without a pair")


def test_read_xml_keeps_entry_order_and_ids():
    entries = read_xml(xml_file(good_xml_entry(1), good_xml_entry(2, triple="X | y | Z")).encode(), "f.xml")
    assert [(e.where, e.triples) for e in entries] == [
        ("f.xml: entry 1 (eid Id1)", (("Bacon", "type", "Food"),)), ("f.xml: entry 2 (eid Id2)", (("X", "y", "Z"),))]


# -- download ------------------------------------------------------------------------------


def test_download_fetches_the_missing_splits_only(tmp_path, write):
    site, raw = tmp_path / "site", tmp_path / "raw"
    for name in ("train.json", "dev.json", "test.json"):
        write(site / name, json.dumps({"entries": [{"1": ENTRY}]}))
    write(raw / "test" / "testdata_with_lex.xml", xml_file(good_xml_entry(1)))  # the test split is here already
    written = webnlg.download(raw, url=site.as_uri() + "/{name}")
    assert written == [raw / "train.json", raw / "dev.json"]
    assert [(s.split, len(s.pairs)) for s in webnlg.DATASET.read_raw(raw)] == [("train", 1), ("valid", 1), ("test", 1)]


def test_download_refuses_what_does_not_parse_and_writes_nothing(tmp_path, write):
    site, raw = tmp_path / "site", tmp_path / "raw"
    write(site / "train.json", json.dumps({"entries": [{"1": ENTRY}]}))
    write(site / "dev.json", "<html>404: Not Found</html>")
    write(site / "test.json", json.dumps({"entries": [{"1": ENTRY}]}))
    with pytest.raises(InputError, match=r"dev\.json:1: not valid JSON"):
        webnlg.download(raw, url=site.as_uri() + "/{name}")
    assert not raw.exists()


def test_download_unreachable_says_what_to_do(tmp_path):
    with pytest.raises(InputError, match=r"could not download http://127\.0\.0\.1:9/train\.json .*"
                                         r"examples/NLG/data/webnlg_challenge_2017/\) or the WebNLG 2017 XML release"):
        webnlg.download(tmp_path, url="http://127.0.0.1:9/{name}", timeout=5)
    assert list(tmp_path.iterdir()) == []
    assert webnlg.DOWNLOAD_URL.format(name="dev.json") == (
        "https://raw.githubusercontent.com/microsoft/LoRA/main/examples/NLG/data/webnlg_challenge_2017/dev.json")


def test_a_raw_folder_name_is_not_a_glob_pattern(tmp_path, write):
    raw = tmp_path / "webnlg[2017]"
    write(raw / "dev" / "1triples" / "a.xml", xml_file(good_xml_entry(1)))
    assert [(s.split, len(s.pairs)) for s in webnlg.DATASET.read_raw(raw)] == [("valid", 1)]
