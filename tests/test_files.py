import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import BOM, REPO, RUN_EOS, error_line, nlg, snapshot, write_encoded

from nlg.files import (
    JSON_MAX_DEPTH,
    MANIFEST,
    InputError,
    atomic_dir,
    atomic_write,
    parse_json,
    read_jsonl,
    read_lines,
    read_text,
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


class _Stop(Exception):
    pass


@pytest.mark.parametrize("moment", ["made", "swapping"])
def test_an_exception_at_any_moment_of_atomic_dir_leaves_no_temporary_directory(tmp_path, monkeypatch, moment):
    """nlg train raises Ctrl-C and SIGTERM as exceptions, between any two bytecodes. One that
    landed just after the temporary directory was made (tempfile.mkdtemp had returned, its name
    not yet kept) leaked `.NAME.XXXX.tmp` (seen in the signal test under load); one between the
    swap's two renames lost the old directory. Now: no temporary left, the old one in place."""
    import nlg.files as files

    target = tmp_path / "checkpoint-3"
    if moment == "swapping":
        target.mkdir()
        (target / "old").write_text("old")
    real_mkdir, real_replace = Path.mkdir, os.replace

    def mkdir(self, *args, **kwargs):
        real_mkdir(self, *args, **kwargs)
        if self.name.endswith(".tmp"):
            raise _Stop  # as a signal handler raises, right after the call returned

    def replace(source, destination):
        real_replace(source, destination)
        if Path(destination).name.endswith(".old"):
            raise _Stop

    if moment == "made":
        monkeypatch.setattr(Path, "mkdir", mkdir)
    else:
        monkeypatch.setattr(files.os, "replace", replace)
    with pytest.raises(_Stop):
        with atomic_dir(target) as tmp:
            (tmp / "new").write_text("new")
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ([] if moment == "made" else ["checkpoint-3"])
    if moment == "swapping":
        assert [p.read_text() for p in target.iterdir()] == ["old"]  # cut mid-swap: the old one is back


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


# parse_json: JSON within limits (every command's JSON inputs: test_absurd_json_in_any_input_is_one_line)

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


# ---------------------------------------------------------------------------------------------
# Outputs never over inputs: every command refuses one before any work
# ---------------------------------------------------------------------------------------------


def case_files(tmp: Path, lora_run: dict[str, Path]) -> dict[str, Path]:
    """Inputs of every command (their contents do not matter: the check comes first)."""
    files = {"data": write_encoded(tmp / "x.jsonl", 4), "formatted": tmp / "formatted.jsonl",
             "predict": tmp / "predict.jsonl", "r": tmp / "r.txt", "h": tmp / "h.txt",
             "refs": tmp / "refs", "adapter": Path(shutil.copytree(lora_run["work"] / "checkpoint-3", tmp / "ckpt")),
             "work": Path(shutil.copytree(lora_run["work"], tmp / "work"))}
    for name in ("formatted", "predict", "r", "h"):
        files[name].write_text(f"{name}\n")
    (tmp / "link.jsonl").symlink_to(files["data"])
    return files


def decode(sample: str, source: str, ref: str, pred: str, *extra: str) -> list[str]:
    return ["decode", "--sample_file", sample, "--input_file", source, "--output_ref_file", ref,
            "--output_pred_file", pred, *extra]


# (name, argv of the command, its stderr), with {NAME} for the files of case_files
OVER_INPUTS = [
    ("beam over its data", ["beam", "--data", "{data}", "--model_card", "gpt2.tiny", "--output_file", "{data}"],
     "nlg beam: error: --output_file {data}: is the input --data {data}; refusing to write over it"),
    ("beam through a link", ["beam", "--data", "{data}", "--model_card", "gpt2.tiny", "--output_file", "{link}"],
     "nlg beam: error: --output_file {link}: is the input --data {data} (both are {data}); refusing to write over it"),
    ("decode predictions over samples", decode("{predict}", "{formatted}", "{r}", "{predict}"),
     "nlg decode: error: --output_pred_file {predict}: is the input --sample_file {predict}; refusing to write over it"),
    ("decode references over the input", decode("{predict}", "{formatted}", "{formatted}", "{h}"),
     "nlg decode: error: --output_ref_file {formatted}: is the input --input_file {formatted}; refusing to write over it"),
    ("decode both outputs one file", decode("{predict}", "{formatted}", "{r}", "{r}"),
     "nlg decode: error: --output_ref_file {r}: is also --output_pred_file {r}; give each output its own name"),
    ("decode a reference folder holding the input",
     decode("{predict}", "{refs}/f.jsonl", "{refs}", "{h}", "--ref_type", "webnlg"),
     "nlg decode: error: --output_ref_file {refs}: this folder is replaced as a whole, and the input "
     "--input_file {refs}/f.jsonl is inside it"),
    ("score over both inputs", ["score", "{r}", "{h}", "--json", "{h}", "--per_instance", "{r}"],
     "nlg score: error: --json {h}: is the input PRED {h}; refusing to write over it"),
    ("analyze over its adapter", ["analyze", "{adapter}", "--json", "{adapter}/adapter_config.json"],
     "nlg analyze: error: --json {adapter}/adapter_config.json: is the input ADAPTER "
     "{adapter}/adapter_config.json; refusing to write over it"),
    ("plot over the log", ["plot", "{work}", "--output", "{work}/metrics.jsonl"],
     "nlg plot: error: --output {work}/metrics.jsonl: is the input WORK_DIR {work}/metrics.jsonl; "
     "refusing to write over it"),
    ("train data in the work_dir's log",
     ["train", "--train_data", "{work}/metrics.jsonl", "--work_dir", "{work}", "--model_card", "gpt2.tiny"],
     "nlg train: error: --work_dir {work}/metrics.jsonl: is the input --train_data {work}/metrics.jsonl; "
     "refusing to write over it"),
]


@pytest.mark.parametrize("argv, message", [case[1:] for case in OVER_INPUTS], ids=[c[0] for c in OVER_INPUTS])
def test_an_output_over_an_input_is_refused_before_any_work(lora_run, tmp_path, capsys, argv, message):
    files = {name: str(path) for name, path in case_files(tmp_path, lora_run).items()}
    files["link"] = str(tmp_path / "link.jsonl")
    (tmp_path / "refs").mkdir()
    (tmp_path / "refs" / "f.jsonl").write_text("{}\n")
    before = snapshot(tmp_path)
    assert nlg(*[a.format(**files) for a in argv]) == 2
    assert error_line(capsys) == message.format(**files) + "\n"
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("script, argv, message", [
    ("measure_scores.py", ["{r}", "{h}", "--json", "{r}"],
     "measure_scores.py: error: --json {r}: is the input REF {r}; refusing to write over it"),
    ("generation_eval.py", ["-R", "{dir}/reference", "-H", "{h}", "-nr", "1", "--json", "{dir}/reference0"],
     "generation_eval.py: error: --json {dir}/reference0: is the input REF {dir}/reference0; refusing to write over it"),
])
def test_the_eval_scripts_refuse_too(tmp_path, script, argv, message):
    files = {"r": tmp_path / "r.txt", "h": tmp_path / "h.txt", "dir": tmp_path}
    for path in (files["r"], files["h"], tmp_path / "reference0"):
        path.write_text("a b c\n")
    before = snapshot(tmp_path)
    done = subprocess.run([sys.executable, str(REPO / "eval" / script), *[a.format(**files) for a in argv]],
                          capture_output=True, text=True, cwd=tmp_path)
    assert (done.returncode, done.stderr, done.stdout) == (2, message.format(**files) + "\n", "")
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------------------------------------
# Bad output paths, values and permissions; a full disk: one line, no partial output
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, message", [
    (["beam", "--data", "{data}", "--model_card", "gpt2.tiny", "--output_file", "{dir}"],
     "nlg beam: error: --output_file {dir}: is a folder; give a file name"),
    (["beam", "--data", "{data}", "--model_card", "gpt2.tiny", "--output_file", "{data}/out.jsonl"],
     "nlg beam: error: --output_file {data}/out.jsonl: cannot write there: {data} is a file, not a folder"),
    (["beam", "--data", "{data}", "--model_card", "gpt2.tiny", "--length_penalty", "nan"],
     "nlg beam: error: length_penalty must be a finite number, got nan"),
    (["score", "{data}", "{data}", "--json", "{dir}"], "nlg score: error: --json {dir}: is a folder; give a file name"),
    (["train", "--train_data", "{data}", "--work_dir", "{data}"],
     "nlg train: error: --work_dir {data}: is a file; give a folder"),
    (["train", "--train_data", "{data}", "--work_dir", "{dir}/w", "--lr", "nan"],
     "nlg train: error: --lr nan: not a finite number"),
    (["train", "--train_data", "{data}", "--work_dir", "{dir}/w", "--adam_beta2", "1"],
     "nlg train: error: --adam_beta2 must be in [0, 1)"),
    (["data", "e2e", "--raw-dir", "{dir}", "--out-dir", "{data}"], "nlg data: error: --out-dir {data}: is a file; give a folder"),
], ids=["beam-into-folder", "beam-under-file", "beam-nan", "score-into-folder", "train-work-dir-file", "train-lr-nan",
        "train-beta", "data-out-dir-file"])
def test_bad_output_paths_and_values_are_one_line_before_any_work(tmp_path, capsys, argv, message):
    files = {"data": str(write_encoded(tmp_path / "x.jsonl", 2)), "dir": str(tmp_path / "folder")}
    (tmp_path / "folder").mkdir()
    before = snapshot(tmp_path)
    assert nlg(*[a.format(**files) for a in argv]) == 2
    assert error_line(capsys) == message.format(**files) + "\n"
    assert snapshot(tmp_path) == before and not (tmp_path / "folder" / "w").exists()


def test_no_permission_is_found_before_the_work(tmp_path, capsys, monkeypatch):
    data = write_encoded(tmp_path / "x.jsonl", 2)
    monkeypatch.setattr("nlg.files.os.access", lambda path, mode: False)  # as a non-root user in a read-only folder
    assert nlg("beam", "--data", data, "--model_card", "gpt2.tiny", "--output_file", tmp_path / "o" / "p.jsonl") == 2
    assert error_line(capsys) == (f"nlg beam: error: --output_file {tmp_path / 'o' / 'p.jsonl'}: cannot write "
                                  f"there: no permission to write in {tmp_path}\n")


def test_full_disk_in_beam(tmp_path, capsys, full_disk):
    data = write_encoded(tmp_path / "x.jsonl", 3)
    before = snapshot(tmp_path)
    out = tmp_path / "predict.jsonl"
    assert nlg("beam", "--data", data, "--model_card", "gpt2.tiny", "--output_file", out, "--beam", 2,
               "--eval_len", 3, "--no_progress", "--eos_token_id", RUN_EOS) == 1
    assert capsys.readouterr().err.splitlines()[-1] == f"nlg beam: error: {out}: No space left on device"
    assert snapshot(tmp_path) == before  # no predict.jsonl, no temporary file


def test_full_disk_in_decode(tmp_path, capsys, full_disk, tokenizer, vocab_dir):
    context, reference = "name : Aromi | area : riverside", "Aromi is by the river."
    formatted = tmp_path / "f.jsonl"
    formatted.write_text(json.dumps({"context": context, "completion": reference}) + "\n")
    predict = tmp_path / "p.jsonl"
    predict.write_text(json.dumps({"id": 0, "context": tokenizer.encode(context) + [50256],
                                   "predict": tokenizer.encode(" Aromi, riverside.") + [50256]}) + "\n")
    before = snapshot(tmp_path)
    assert nlg("decode", "--sample_file", predict, "--input_file", formatted, "--vocab", vocab_dir,
               "--output_ref_file", tmp_path / "ref.txt", "--output_pred_file", tmp_path / "pred.txt") == 1
    assert error_line(capsys) == f"nlg decode: error: {tmp_path / 'ref.txt'}: No space left on device\n"
    assert snapshot(tmp_path) == before


def test_full_disk_in_score_writes_neither_output_and_reports_nothing(tmp_path, capsys, full_disk, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no Java: BLEU and NIST only, in a second
    ref, pred = tmp_path / "r.txt", tmp_path / "h.txt"
    ref.write_text("the cat sat on the mat\n\nhello world\n\n")
    pred.write_text("the cat sat on a mat\nhello world\n")
    before = snapshot(tmp_path)
    full_disk["where"] = ".i.jsonl."  # --json fits, --per_instance does not: neither may appear
    assert nlg("score", ref, pred, "--json", tmp_path / "s.json", "--per_instance", tmp_path / "i.jsonl") == 1
    out, err = capsys.readouterr()
    assert out == "" and err.splitlines()[-1] == f"nlg score: error: {tmp_path / 'i.jsonl'}: No space left on device"
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------------------------------------
# Byte-order marks and absurd JSON in any input
# ---------------------------------------------------------------------------------------------


def test_a_bom_in_json_and_jsonl_inputs_is_removed(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(BOM + b'{"id": 1}\n')
    (tmp_path / "b.json").write_bytes(BOM + b'{"id": 2}')
    assert read_jsonl(tmp_path / "a.jsonl") == [(1, {"id": 1})]
    assert json.loads(read_text(tmp_path / "b.json")) == {"id": 2}
    from nlg.datasets.triples import load_json, read_file

    assert load_json(read_file(tmp_path / "b.json"), "b.json") == {"id": 2}


ABSURD_JSON = {
    "deep": ("[" * 100_000 + "]" * 100_000, "JSON nested more than 100 levels deep"),
    "digits": ("9" * 5000, "a number with more than 4300 digits (Python's limit for integers)"),
    "surrogate": ('"Bacon \\ud800 is food."', "\\ud800 is a lone UTF-16 surrogate (half of a pair), not a "
                  "character; the text cannot be written as UTF-8"),
}


def json_inputs(tmp: Path, bad: str, vocab_dir: Path) -> dict[str, tuple[list[object], Path]]:
    """Per JSON input of a command: (its argv, the file holding `bad` on line 2)."""

    def write(name: str, text: str) -> Path:
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    webnlg = write("raw/dev.json", '{"entries": [{"1": {"category": "Food", "modifiedtripleset": [{"subject": '
                   '"B", "property": "p", "object": "o"}],\n"lexicalisations": [{"comment": "good", "lex": '
                   f"{bad}}}]}}}}]}}")
    formatted = write("formatted.jsonl", '{"context": "a : b : c", "completion": "x"}\n'
                      f'{{"context": "a : b : d", "completion": {bad}}}\n')
    good_formatted = write("good_formatted.jsonl", '{"context": "a", "completion": "x"}\n')
    predict = write("predict.jsonl", f'{{"id": 1, "context": [64], "predict": [87]}}\n{{"id": 2, "predict": {bad}}}\n')
    good_predict = write("good_predict.jsonl", '{"id": 1, "context": [64], "predict": [87]}\n')
    encoded = write("encoded.jsonl", f'{{"context": [1, 2], "completion": [3, 4]}}\n{{"context": {bad}}}\n')
    good_encoded = write_encoded(tmp / "good_encoded.jsonl", 2)
    scores = write("scores.json", f'{{"BLEU": 1.0, "METEOR": 0.1,\n"TER": {bad}}}')
    metrics = write("work/metrics.jsonl", f'{{"step": 1, "loss": 2.0}}\n{{"step": 2, "loss": {bad}}}\n')
    adapter = write("adapter/adapter_config.json", f'{{"r": 4,\n"lora_alpha": {bad}}}')
    write("adapter/adapter_model.safetensors", "")
    manifest = write("checkpoint/manifest.json", f'{{"format": 1,\n"files": {bad}}}')
    write("checkpoint/adapter_config.json", "{}")
    write("checkpoint/adapter_model.safetensors", "")
    encoder = write("vocab/encoder.json", f'{{"!": 0,\n"x": {bad}}}')
    shutil.copy(vocab_dir / "vocab.bpe", tmp / "vocab" / "vocab.bpe")
    write("e2e/test.txt", "name : A || A is here.\n")
    base = write("base/config.json", f'{{"n_layer": 2,\n"n_embd": {bad}}}')
    write("base/model.safetensors", "")
    out = tmp / "out"
    return {
        "data": (["data", "webnlg", "--raw-dir", webnlg.parent, "--out-dir", out, "--vocab", vocab_dir], webnlg),
        "data --vocab": (["data", "e2e", "--raw-dir", tmp / "e2e", "--out-dir", out, "--vocab", encoder.parent],
                         encoder),
        "decode --input_file": (decode(good_predict, formatted, out / "r", out / "p"), formatted),
        "decode --sample_file": (decode(predict, good_formatted, out / "r", out / "p", "--vocab", vocab_dir),
                                 predict),
        "train": (["train", "--train_data", encoded, "--model_card", "gpt2.tiny", "--work_dir", out], encoded),
        "train --init_checkpoint": (["train", "--train_data", good_encoded, "--init_checkpoint", base.parent,
                                     "--work_dir", out], base),
        "beam": (["beam", "--data", encoded, "--model_card", "gpt2.tiny", "--output_file", out / "p"], encoded),
        "results": (["results", "dart", "--card", "gpt2.md", "--scores", f"all={scores}", "--md", out / "r.md",
                     "--json", out / "r.json"], scores),
        "plot": (["plot", metrics.parent], metrics),
        "analyze": (["analyze", adapter.parent], adapter),
        "analyze, a manifest": (["analyze", manifest.parent], manifest),
    }


@pytest.mark.parametrize("kind", sorted(ABSURD_JSON))
def test_absurd_json_in_any_input_is_one_line(tmp_path, capsys, vocab_dir, kind):
    bad, reason = ABSURD_JSON[kind]
    for name, (argv, path) in json_inputs(tmp_path / "in", bad, vocab_dir).items():
        before = snapshot(tmp_path)
        assert nlg(*argv) == 2, name
        problem = f"{path}:2: {reason}"
        if path.name == MANIFEST:
            problem = f"{path}: not a readable manifest ({problem})"
        if "--init_checkpoint" in name:
            problem = f"--init_checkpoint {path.parent}: {problem}"
        assert error_line(capsys) == f"nlg {argv[0]}: error: {problem}\n", name
        written = {key for key in snapshot(tmp_path).keys() - before.keys() if not key.endswith("train.lock")}
        assert not written and {key: snapshot(tmp_path)[key] for key in before} == before, name
