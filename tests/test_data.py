"""`nlg data NAME`: the stage on every dataset (the datasets' own readers: tests/datasets/)."""

import json
import subprocess
import sys

import pytest

from nlg import cli
from nlg import data as data_module
from nlg.datasets import e2e
from nlg.datasets.e2e import read_raw
from nlg.files import InputError
from nlg.pairs import load_encoded, load_formatted

GOOD = "name : The Vaults | Type : pub | price : more than £ 30||The Vaults pub near Café Adriatic has a 5 star rating . \n"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, e2e_raw_dir, vocab_dir):
    """The stage run once, as a user runs it: `python -m nlg data e2e ...` in a subprocess."""
    out = tmp_path_factory.mktemp("e2e")
    result = subprocess.run(
        [sys.executable, "-m", "nlg", "data", "e2e", "--raw-dir", str(e2e_raw_dir), "--out-dir", str(out),
         "--vocab", str(vocab_dir)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return out, result.stdout


def paper_pipeline(raw_line, reference):
    """What the LoRA repo's format_converting_e2e.py then gpt2_encode.py write for one line."""
    items = raw_line.strip().split("||")
    context, completion = items[0], items[1].strip("\n")
    formatted = json.dumps({"context": context, "completion": completion}) + "\n"
    encoded = json.dumps({"context": reference.encode(context) + [50256],
                          "completion": reference.encode(" " + completion) + [50256]}) + "\n"
    return formatted, encoded


@pytest.mark.parametrize("split,count", [("valid", 4672), ("test", 4693)])
def test_outputs_are_the_papers_files_byte_for_byte(prepared, hf_gpt2, e2e_raw_dir, split, count):
    out, _ = prepared
    raw = (e2e_raw_dir / f"{split}.txt").read_text(encoding="utf-8").splitlines()
    expected = [paper_pipeline(line, hf_gpt2) for line in raw]
    formatted = (out / f"{split}_formatted.jsonl").read_text(encoding="utf-8")
    encoded = (out / f"{split}.jsonl").read_text(encoding="utf-8")
    assert len(encoded.splitlines()) == len(formatted.splitlines()) == count
    assert formatted == "".join(f for f, _ in expected)
    assert encoded == "".join(e for _, e in expected)


def test_summary_and_no_stray_files(prepared):
    out, stdout = prepared
    assert sorted(p.name for p in out.iterdir()) == [
        "test.jsonl", "test_formatted.jsonl", "valid.jsonl", "valid_formatted.jsonl"]
    rows = {line.split()[0]: line.split() for line in stdout.splitlines() if line.split()[:1] in (["valid"], ["test"])}
    assert rows["valid"][1:3] == ["4672", "547"] and rows["test"][1:3] == ["4693", "630"]
    assert "9365 pairs in" in stdout


def test_loaders_read_the_outputs_back(prepared):
    out, _ = prepared
    pairs = load_encoded(out / "test.jsonl")
    texts = load_formatted(out / "test_formatted.jsonl")
    assert len(pairs) == len(texts) == 4693
    assert all(p.context[-1] == 50256 and p.completion[-1] == 50256 for p in pairs)
    assert pairs[0].line == texts[0].line == 1 and pairs[-1].line == 4693
    assert texts[0].context.startswith("name : ") and not texts[0].completion.startswith(" ")
    assert len({t.context for t in texts}) == 630


@pytest.mark.parametrize("bad,reason", [
    ("name : X | Type : pub the reference\n", r"test\.txt:2: expected one '\|\|' .* found none"),
    ("name : X||one||two\n", r"test\.txt:2: expected one '\|\|' .* found 2"),
    ("   ||The reference .\n", r"test\.txt:2: empty meaning representation"),
    ("name : X||  \n", r"test\.txt:2: empty reference"),
    (b"name : Caf\xe9||bad byte\n", r"test\.txt:2: not valid UTF-8"),
])
def test_bad_line_fails_cleanly_and_writes_nothing(tmp_path, vocab_dir, capsys, write, bad, reason):
    """valid.txt is fine, test.txt is not: no split is written, old outputs stay as they were."""
    raw, out = tmp_path / "raw", tmp_path / "out"
    write(raw / "valid.txt", GOOD * 3)
    write(raw / "test.txt", GOOD.encode() + (bad.encode() if isinstance(bad, str) else bad))
    write(out / "test.jsonl", "old\n")
    code = cli.main(["data", "e2e", "--raw-dir", str(raw), "--out-dir", str(out), "--vocab", str(vocab_dir)])
    assert code == 2
    message = capsys.readouterr().err
    assert message.startswith("nlg data: error: ") and str(raw / "test.txt") in message
    with pytest.raises(InputError, match=reason):
        read_raw(raw / "test.txt")
    assert sorted(p.name for p in out.iterdir()) == ["test.jsonl"]
    assert (out / "test.jsonl").read_text() == "old\n"


def test_empty_or_missing_raw_files(tmp_path, vocab_dir, write):
    with pytest.raises(InputError, match="no pairs"):
        read_raw(write(tmp_path / "train.txt", "\n \n"))
    with pytest.raises(InputError, match=r"none of train\.txt, valid\.txt, test\.txt"):
        data_module.main(["e2e", "--raw-dir", str(tmp_path / "nothing"), "--vocab", str(vocab_dir)])


def test_download_then_prepare(tmp_path, vocab_dir, monkeypatch, capsys, write):
    site, out = tmp_path / "site", tmp_path / "out"
    for split in ("train", "valid", "test"):
        write(site / f"{split}.txt", GOOD * {"train": 3, "valid": 2, "test": 1}[split])
    write(out / "test.txt", GOOD * 5)  # already present: kept, not fetched
    monkeypatch.setattr(e2e, "DOWNLOAD_URL", site.as_uri() + "/{split}.txt")
    monkeypatch.setenv("E2E_RAW_DIR", "")
    assert data_module.main(["e2e", "--out-dir", str(out), "--vocab", str(vocab_dir), "--download"]) == 0
    printed = capsys.readouterr().out
    assert f"downloaded {out / 'train.txt'}" in printed and "test.txt" not in printed.split("split")[0]
    assert [len(load_encoded(out / f"{s}.jsonl")) for s in ("train", "valid", "test")] == [3, 2, 5]


def test_raw_dir_is_required_without_download(monkeypatch, capsys):
    monkeypatch.delenv("E2E_RAW_DIR", raising=False)
    with pytest.raises(SystemExit) as caught:
        data_module.main(["e2e"])
    assert caught.value.code == 2
    assert "give --raw-dir DIR (or set $E2E_RAW_DIR), or --download" in capsys.readouterr().err


# -- WebNLG and DART through the same stage --------------------------------------------------


def distinct(path):
    return {pair.context for pair in load_formatted(path)}


def test_webnlg_xml_release_every_split(webnlg_prepared):
    """The issue's counts: 18,025 good lexicalisations in train; 1,862 test contexts, 971 seen."""
    out, summaries = webnlg_prepared
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{split}{suffix}.jsonl" for split in ("train", "valid", "test") for suffix in ("", "_formatted"))
    counts = {s.split: (s.pairs, s.contexts) for s in summaries}
    assert counts == {"train": (18025, 6888), "valid": (2258, 870), "test": (4928, 1862)}
    test = load_formatted(out / "test_formatted.jsonl")
    seen = {p.context for p in test if p.cate}
    assert (len(seen), len({p.context for p in test if not p.cate})) == (971, 891)
    assert all(p.cate is True for p in load_formatted(out / "train_formatted.jsonl"))  # train is all "seen"
    encoded = load_encoded(out / "test.jsonl")
    assert len(encoded) == 4928 and all(p.context[-1] == p.completion[-1] == 50256 for p in encoded)
    train = next(s for s in summaries if s.split == "train")
    assert train.source.endswith("train/*triples/*.xml (52 files)")
    assert train.left_out == ("77 texts not marked good (as the paper does)",
                              "5 entries with no text kept, so without a pair")


def test_dart_dev_json_and_test_xml(dart_prepared, dart_raw_dir):
    out, summaries = dart_prepared
    assert sorted(p.name for p in out.iterdir()) == [
        "test.jsonl", "test_formatted.jsonl", "valid.jsonl", "valid_formatted.jsonl"]
    counts = {s.split: (s.pairs, s.contexts) for s in summaries}
    # DART's test release has 12,552 annotations, one of them empty (left out, see nlg/datasets/triples.py).
    assert counts == {"valid": (6980, 2721), "test": (12551, 4159)}
    valid, test = summaries
    assert valid.source == f"{dart_raw_dir / 'dart-v1.1.1-full-dev.json'} (the XML form beside it, " \
                           "dart-v1.1.1-full-dev.xml, not read)"
    assert test.left_out == (f"1 empty text (the first in {dart_raw_dir / 'dart-v1.1.1-full-test.xml'}: "
                             "entry 116 (eid Id116))",)
    assert all(p.cate is None for p in load_formatted(out / "valid_formatted.jsonl"))


def test_summary_names_what_was_read_and_left_out(webnlg_json_dir, tmp_path, vocab_dir, capsys):
    assert cli.main(["data", "webnlg", "--raw-dir", str(webnlg_json_dir), "--out-dir", str(tmp_path),
                     "--vocab", str(vocab_dir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:3] == ["valid", "2258", "870"]
    assert lines[2:5] == [f"valid: read {webnlg_json_dir / 'dev.json'}",
                          "valid: left out 10 texts not marked good (as the paper does)",
                          "valid: left out 1 entry with no text kept, so without a pair"]
    assert lines[5].startswith("2258 pairs in ")


@pytest.mark.parametrize("name,looked_for", [
    ("webnlg", "none of train.json or train/*triples/*.xml, dev.json or dev/*triples/*.xml, "
               "test.json or test/testdata_with_lex.xml there (give --raw-dir or $WEBNLG_RAW_DIR, or add --download)"),
    ("dart", "none of dart-v1.1.1-full-train.json or .xml, dart-v1.1.1-full-dev.json or .xml, "
             "dart-v1.1.1-full-test.json or .xml there (give --raw-dir or $DART_RAW_DIR, or add --download)"),
])
def test_a_folder_with_neither_form_says_what_it_looked_for(tmp_path, vocab_dir, capsys, write, name, looked_for):
    write(tmp_path / "raw" / "dev.jsonl", "{}\n")  # near misses are not read
    assert cli.main(["data", name, "--raw-dir", str(tmp_path / "raw"), "--vocab", str(vocab_dir)]) == 2
    assert capsys.readouterr().err == f"nlg data: error: {tmp_path / 'raw'}: {looked_for}\n"


def test_a_bad_webnlg_split_writes_nothing(tmp_path, webnlg_json_dir, vocab_dir, capsys, write):
    """dev.json is fine, test.json has a triple without three parts: no split is written."""
    raw, out = tmp_path / "raw", tmp_path / "out"
    write(raw / "dev.json", (webnlg_json_dir / "dev.json").read_bytes())
    bad = {"entries": [{"1": {"category": "Food", "lexicalisations": [{"comment": "good", "lex": "A b."}],
                              "modifiedtripleset": [{"subject": "A", "property": "b"}], "xml_id": "Id1"}}]}
    write(raw / "test.json", json.dumps(bad))
    write(out / "valid.jsonl", "old\n")
    assert cli.main(["data", "webnlg", "--raw-dir", str(raw), "--out-dir", str(out), "--vocab", str(vocab_dir)]) == 2
    assert capsys.readouterr().err.startswith(f"nlg data: error: {raw / 'test.json'}: entry 1 (eid Id1): triple 1 is not three strings")
    assert sorted(p.name for p in out.iterdir()) == ["valid.jsonl"] and (out / "valid.jsonl").read_text() == "old\n"
