"""nlg.datasets.e2e: the paper's `context||reference` text files, their download and reference file."""

from pathlib import Path

import pytest
from helpers import BOM, nlg, snapshot

from nlg.datasets import Decoded, e2e
from nlg.datasets.e2e import read_raw
from nlg.files import InputError
from nlg.pairs import TextPair

LINE = "name : The Vaults | Type : pub | price : more than £ 30||The Vaults pub near Café Adriatic has a 5 star rating . \n"


def test_blank_lines_skipped_and_sides_stripped(tmp_path, write):
    path = write(tmp_path / "valid.txt", "\n" + LINE + "  \n" + " a : b ||  c d \r\n")
    assert read_raw(path) == [
        TextPair("name : The Vaults | Type : pub | price : more than £ 30",
                 "The Vaults pub near Café Adriatic has a 5 star rating .", 2),
        TextPair("a : b", "c d", 4),
    ]


def test_raw_dir_reads_the_splits_present(e2e_raw_dir):
    splits = e2e.DATASET.read_raw(e2e_raw_dir)
    assert [(s.split, len(s.pairs), s.left_out) for s in splits] == [("valid", 4672, ()), ("test", 4693, ())]
    assert splits[0].source == str(e2e_raw_dir / "valid.txt")


def test_download_unreachable_says_what_to_do(tmp_path):
    # Port 9 (discard) on localhost: refused at once, no real network involved.
    with pytest.raises(InputError, match=r"could not download http://127\.0\.0\.1:9/train\.txt .* run without --download"):
        e2e.download(tmp_path, url="http://127.0.0.1:9/{split}.txt", timeout=5)
    assert list(tmp_path.iterdir()) == []


def test_download_checks_content_before_writing(tmp_path, write):
    site = tmp_path / "site"
    write(site / "train.txt", LINE * 2)
    write(site / "valid.txt", "<html>404: Not Found</html>\n")
    raw = tmp_path / "raw"
    with pytest.raises(InputError, match=r"valid\.txt:1: expected one '\|\|'"):
        e2e.download(raw, splits=("train", "valid"), url=site.as_uri() + "/{split}.txt")
    assert not raw.exists() or list(raw.iterdir()) == []


def test_reference_file_groups_each_contexts_references(tmp_path: Path):
    decoded = Decoded([["a b .", "a c ."], ["d ."]], ["a .", "d ."])
    assert e2e.write_references(decoded, tmp_path / "ref.txt", tmp_path / "pred.txt", None) == []
    assert (tmp_path / "ref.txt").read_text() == "a b .\na c .\n\nd .\n\n"
    assert (tmp_path / "pred.txt").read_text() == "a .\nd .\n"
    with pytest.raises(InputError, match="--ref_num does not apply to --ref_type e2e"):
        e2e.write_references(decoded, tmp_path / "r2.txt", tmp_path / "p2.txt", 6)
    assert not (tmp_path / "r2.txt").exists() and not (tmp_path / "p2.txt").exists()


def test_a_bom_is_not_part_of_the_first_meaning_representation(tmp_path, capsys, vocab_dir, e2e_raw_dir):
    lines = (e2e_raw_dir / "valid.txt").read_bytes().splitlines(keepends=True)[:3]
    outputs = {}
    for name, mark in (("plain", b""), ("bom", BOM)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "test.txt").write_bytes(mark + b"".join(lines))
        assert nlg("data", "e2e", "--raw-dir", tmp_path / name, "--out-dir", tmp_path / f"{name}_out",
                   "--vocab", vocab_dir) == 0
        outputs[name] = snapshot(tmp_path / f"{name}_out")
    assert outputs["bom"] == outputs["plain"] and "\\ufeff" not in outputs["bom"]["test_formatted.jsonl"].decode()
    assert f"note: {tmp_path / 'bom' / 'test.txt'}: removed the UTF-8 byte-order mark" in capsys.readouterr().err
