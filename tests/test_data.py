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
    assert message.startswith("error: ") and str(raw / "test.txt") in message
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

