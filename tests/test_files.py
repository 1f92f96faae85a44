import pytest

from nlg.files import (
    JSON_MAX_DEPTH,
    InputError,
    atomic_dir,
    atomic_write,
    parse_json,
    read_jsonl,
    read_lines,
)


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_write(target) as handle:
            handle.write("partial")
            raise RuntimeError("boom")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_keeps_old_content_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as handle:
            handle.write("new")
            raise RuntimeError("boom")
    assert target.read_text() == "old"


def test_atomic_dir_replaces_whole(tmp_path):
    target = tmp_path / "ckpt"
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "b").write_text("2")
            raise RuntimeError("boom")
    assert sorted(p.name for p in target.iterdir()) == ["a"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_read_lines_names_bad_bytes(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"fine\n\xff\xfe broken\n")
    with pytest.raises(InputError, match=r"bad.txt:2: not valid UTF-8"):
        read_lines(path)


def test_read_jsonl_names_bad_line(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n\n{"a": \n')
    with pytest.raises(InputError, match=r"x.jsonl:3: not valid JSON"):
        read_jsonl(path)


def test_atomic_outputs_get_ordinary_permissions(tmp_path):
    import os

    mask = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "f.txt") as handle:
            handle.write("x")
        with atomic_dir(tmp_path / "d"):
            pass
    finally:
        os.umask(mask)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755


# parse_json: JSON within limits (issue 23, case 10; the commands are tested in test_failures.py)

DEEP = "[" * 100_000 + "]" * 100_000


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize("text, value", [
    ("[" * JSON_MAX_DEPTH + "]" * JSON_MAX_DEPTH, nested(JSON_MAX_DEPTH)),  # exactly at the limit
    ('{"a": "' + "[" * 500 + '"}', {"a": "[" * 500}),  # brackets inside a string are text
    ('"\\ud83d\\ude00"', "\U0001F600"),  # a surrogate pair is one character
    ('"\\\\ud800"', "\\ud800"),  # an escaped backslash, then the letters ud800
    ("[" + "9" * 4300 + "]", [int("9" * 4300)]),  # Python's int limit itself
])
def test_parse_json_takes_what_is_within_limits(text, value):
    assert parse_json(text, "x.json") == value


@pytest.mark.parametrize("text, message", [
    ("[" * (JSON_MAX_DEPTH + 1) + "]" * (JSON_MAX_DEPTH + 1), r"x.json:1: JSON nested more than 100 levels deep"),
    ('{"a": 1,\n "b": ' + DEEP + "}", r"x.json:2: JSON nested more than 100 levels deep"),
    ("[" * 100_000, r"x.json:1: JSON nested more than 100 levels deep"),  # unbalanced too
    ('{"a": [\n1,\n' + "7" * 5000 + "]}", r"x.json:3: a number with more than 4300 digits"),
    ('{"a":\n"\\ud800 x"}', r"x.json:2: \\ud800 is a lone UTF-16 surrogate \(half of a pair\), not a character"),
    ('"\\udc00\\ud800"', r"x.json:1: \\udc00 is a lone"),  # low then high: no pair
    ('"\\ud83d\\\\\\ude00"', r"x.json:1: \\ud83d is a lone"),  # a backslash between the halves
    ('{"a": 1,\n', r"x.json:2: not valid JSON \(Expecting property name"),
])
def test_parse_json_refuses_with_file_and_line(text, message):
    with pytest.raises(InputError, match=message):
        parse_json(text, "x.json")


def test_read_jsonl_names_the_line_of_each_limit(tmp_path):
    for bad in (DEEP, "9" * 5000, '"\\udfff"'):
        path = tmp_path / "x.jsonl"
        path.write_text('{"a": 1}\n\n' + bad + "\n")
        with pytest.raises(InputError, match=r"x.jsonl:3: "):
            read_jsonl(path)
