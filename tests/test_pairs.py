"""nlg.pairs: the formatted and encoded jsonl files every stage reads, spelled as the paper's scripts."""

import json

import pytest

from nlg.files import InputError
from nlg.pairs import Pair, TextPair, encode_pairs, jsonl_line, load_encoded, load_formatted


@pytest.mark.parametrize("line,reason", [
    ('{"context": [1, 2]}', r"x\.jsonl:2: expected an object with keys context and completion, got \['context'\]"),
    ('{"context": [1], "completion": [2], "extra": 1}', "got \\['completion', 'context', 'extra'\\]"),
    ('{"context": [1], "completion": [2], "cate": true}', "got \\['cate', 'completion', 'context'\\]"),
    ("[1, 2]", "got list"),
    ('{"context": [], "completion": [2]}', r"x\.jsonl:2: context must be a non-empty list"),
    ('{"context": [1], "completion": "2"}', "completion must be a non-empty list"),
    ('{"context": [1, 2.0], "completion": [2]}', "context must hold integers only"),
    ('{"context": [1, true], "completion": [2]}', "context must hold integers only"),
    ('{"context": [1], "completion": [2, 50257]}', r"completion has token id 50257, outside \[0, 50257\)"),
    ('{"context": [-1], "completion": [2]}', "context has token id -1"),
    ('{"context": [1], "completion": [2', r"x\.jsonl:2: not valid JSON"),
])
def test_load_encoded_names_the_bad_line(tmp_path, write, line, reason):
    path = write(tmp_path / "x.jsonl", '{"context": [1, 50256], "completion": [2, 50256]}\n' + line + "\n")
    with pytest.raises(InputError, match=reason):
        load_encoded(path)


def test_load_encoded_and_formatted_basics(tmp_path, write):
    path = write(tmp_path / "x.jsonl", '{"context": [1, 50256], "completion": [2, 50256]}\n\n')
    assert load_encoded(path) == [Pair([1, 50256], [2, 50256], 1)]
    with pytest.raises(InputError, match="no pairs"):
        load_encoded(write(tmp_path / "empty.jsonl", "\n"))
    good = write(tmp_path / "f.jsonl", '{"context": "a : b", "completion": "c"}\n')
    assert load_formatted(good) == [TextPair("a : b", "c", 1)]
    bad = write(tmp_path / "g.jsonl", '{"context": "a : b", "completion": "c"}\n{"context": " ", "completion": "c"}\n')
    with pytest.raises(InputError, match=r"g\.jsonl:2: context must be a non-empty string"):
        load_formatted(bad)


def test_formatted_cate_round_trip(tmp_path, write):
    """WebNLG's flag: written last, as the paper's converter does, and read back as a bool."""
    pairs = [TextPair("A : b : C", "A b C.", 1, True), TextPair("D : e : F", "Ü.", 2, False), TextPair("x", "y", 3)]
    text = "".join(jsonl_line(p) for p in pairs)
    assert text == ('{"context": "A : b : C", "completion": "A b C.", "cate": true}\n'
                    '{"context": "D : e : F", "completion": "\\u00dc.", "cate": false}\n'
                    '{"context": "x", "completion": "y"}\n')
    assert load_formatted(write(tmp_path / "f.jsonl", text)) == pairs
    for bad, reason in [('"cate": 1', "cate must be true or false, got 1"), ('"cate": null', "got None"),
                        ('"seen": true', r"keys context and completion \(and optionally cate\), got")]:
        path = write(tmp_path / "bad.jsonl", '{"context": "x", "completion": "y", ' + bad + "}\n")
        with pytest.raises(InputError, match=rf"bad\.jsonl:1: .*{reason}"):
            load_formatted(path)


def test_encoded_lines_never_carry_cate(tokenizer):
    (pair,) = encode_pairs([TextPair("A : b : C", "A b C.", 7, True)], tokenizer)
    assert pair.line == 7 and pair.context[-1] == pair.completion[-1] == 50256
    assert list(json.loads(jsonl_line(pair))) == ["context", "completion"]
    assert pair.completion[:-1] == tokenizer.encode(" A b C.")
