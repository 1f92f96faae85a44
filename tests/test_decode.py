"""`nlg decode`: the paper's reference/prediction files for E2E, WebNLG and DART; mismatches stop with counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nlg.decode import cut, main, post_process
from nlg.pairs import load_encoded, load_formatted

LINES = [0, 1, 2, 3, 4, 5, 6, 1160, 1161]  # three Blue Spice contexts (2, 2, 3 refs) + one with a £


@pytest.fixture(scope="module")
def pairs(e2e_raw_dir: Path) -> list[tuple[str, str]]:
    lines = (e2e_raw_dir / "test.txt").read_text(encoding="utf-8").splitlines()
    return [tuple(side.strip() for side in lines[i].split("||")) for i in LINES]


def write_formatted(path: Path, pairs: list[tuple[str, str]]) -> None:
    with open(path, "w", encoding="utf-8") as handle:  # as the paper's converter writes it
        for context, completion in pairs:
            handle.write(json.dumps({"context": context, "completion": completion}) + "\n")


def write_predictions(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def record(tokenizer, pairs, line: int, text: str, end: list[int]) -> dict:
    context = tokenizer.encode(pairs[line][0]) + [50256]
    return {"id": line, "context": context, "predict": tokenizer.encode(text) + end}


PREDICTED = {  # first line of each distinct context -> (generated text, ending ids)
    0: (" Blue Spice is a coffee shop in the city centre.", [50256]),
    2: (" Blue Spice is by the river.\n\n ignored after a blank line", []),
    4: (" A five star coffee shop,\nBlue Spice.", [628]),
    7: (" The Cricketers costs £20-25.", [50256, 11, 12]),
}


@pytest.fixture
def files(tmp_path: Path, tokenizer, pairs) -> dict[str, Path]:
    paths = {name: tmp_path / name for name in ("formatted.jsonl", "predict.jsonl", "ref.txt", "pred.txt")}
    write_formatted(paths["formatted.jsonl"], pairs)
    write_predictions(paths["predict.jsonl"],
                      [record(tokenizer, pairs, i, text, end) for i, (text, end) in PREDICTED.items()])
    return paths


def decode(files: dict[str, Path], vocab_dir: Path, *extra: str) -> int:
    return main(["--sample_file", str(files["predict.jsonl"]), "--input-file", str(files["formatted.jsonl"]),
                 "--output_ref_file", str(files["ref.txt"]), "--output-pred-file", str(files["pred.txt"]),
                 "--vocab", str(vocab_dir), *extra])


def test_writes_the_papers_file_format(files, vocab_dir, pairs) -> None:
    assert decode(files, vocab_dir) == 0
    refs = [completion for _, completion in pairs]
    assert files["ref.txt"].read_text(encoding="utf-8") == (
        f"{refs[0]}\n{refs[1]}\n\n{refs[2]}\n{refs[3]}\n\n{refs[4]}\n{refs[5]}\n{refs[6]}\n\n{refs[7]}\n{refs[8]}\n\n")
    assert files["pred.txt"].read_text(encoding="utf-8") == (
        "Blue Spice is a coffee shop in the city centre.\n"
        "Blue Spice is by the river.\n"
        "A five star coffee shop, Blue Spice.\n"  # a line break inside a prediction would shift every later line
        "The Cricketers costs £20-25.\n")


def test_tokenize_and_lower(files, vocab_dir, pairs) -> None:
    assert decode(files, vocab_dir, "--tokenize", "--lower") == 0
    predictions = files["pred.txt"].read_text(encoding="utf-8").splitlines()
    assert predictions[0] == "blue spice is a coffee shop in the city centre ."
    assert predictions[3] == "the cricketers costs £ 20 - 25 ."
    assert files["ref.txt"].read_text(encoding="utf-8").splitlines()[0] == post_process(pairs[0][1], True, True)
    assert post_process("Isn't it £20-25?", tokenize=True) == "Isn ' t it £ 20 - 25 ?"


def test_cut() -> None:
    assert cut("  A b.<|endoftext|>junk") == "A b."
    assert cut(" A b.\n\nmore<|endoftext|>") == "A b."
    assert cut("<|endoftext|>") == ""


def test_missing_contexts_are_an_error_unless_allowed(files, vocab_dir, tokenizer, pairs, capsys) -> None:
    from nlg.cli import run_main

    write_predictions(files["predict.jsonl"], [record(tokenizer, pairs, 4, " Only one.", [628]),
                                               record(tokenizer, pairs, 0, " And two.", [628])])
    assert run_main(main, ["--sample_file", str(files["predict.jsonl"]), "--input_file",
                           str(files["formatted.jsonl"]), "--output_ref_file", str(files["ref.txt"]),
                           "--output_pred_file", str(files["pred.txt"]), "--vocab", str(vocab_dir)]) == 2
    err = capsys.readouterr().err
    assert "predicts 2 of the 4 distinct contexts" in err and "2 missing" in err and "--allow_subset" in err
    assert not files["ref.txt"].exists() and not files["pred.txt"].exists()

    assert decode(files, vocab_dir, "--allow_subset") == 0
    refs = [completion for _, completion in pairs]
    # Input order (not prediction order), references of the predicted contexts only.
    assert files["ref.txt"].read_text(encoding="utf-8") == f"{refs[0]}\n{refs[1]}\n\n{refs[4]}\n{refs[5]}\n{refs[6]}\n\n"
    assert files["pred.txt"].read_text(encoding="utf-8") == "And two.\nOnly one.\n"


@pytest.mark.parametrize("problem", ["wrong_context", "id_out_of_range", "duplicate_id", "bad_token"])
def test_mismatched_predictions_are_errors(problem, files, vocab_dir, tokenizer, pairs) -> None:
    from nlg.files import InputError

    records = [record(tokenizer, pairs, i, text, end) for i, (text, end) in PREDICTED.items()]
    if problem == "wrong_context":
        records[1]["context"] = records[2]["context"]
        message = "1 of 4 predictions"
    elif problem == "id_out_of_range":
        records[3]["id"] = 9
        message = "id 9 is not a line"
    elif problem == "duplicate_id":
        records.append(dict(records[0]))
        message = "already predicted at line 1"
    else:
        records[0]["predict"] = [50257]
        message = "predict.jsonl:1: predict must be a list of token ids"
    write_predictions(files["predict.jsonl"], records)
    with pytest.raises(InputError, match=message):
        decode(files, vocab_dir, "--allow_subset")
    assert not files["ref.txt"].exists()


def test_papers_prediction_files_are_read(files, vocab_dir, tokenizer, pairs) -> None:
    """The paper's beam script writes every line, no context, zero-padded to eval_len."""
    records = []
    for line in range(len(pairs)):
        first = max(i for i in PREDICTED if i <= line)
        text, end = PREDICTED[first]
        ids = tokenizer.encode(text) + end
        records.append({"id": line, "predict": ids + [0] * (40 - len(ids))})
    write_predictions(files["predict.jsonl"], records)
    assert decode(files, vocab_dir) == 0
    assert files["pred.txt"].read_text(encoding="utf-8").splitlines() == [
        "Blue Spice is a coffee shop in the city centre.", "Blue Spice is by the river.",
        "A five star coffee shop, Blue Spice.", "The Cricketers costs £20-25."]


def test_beam_then_decode(tmp_path, files, vocab_dir, tokenizer, pairs) -> None:
    """The two stages fit: `nlg beam` on the encoded data, then `nlg decode` on its output."""
    from nlg.beam import main as beam

    encoded = tmp_path / "test.jsonl"
    encoded.write_text("".join(json.dumps({"context": tokenizer.encode(c) + [50256],
                                           "completion": tokenizer.encode(" " + r) + [50256]}) + "\n"
                               for c, r in pairs))
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model; extra threads only stall on a busy shared CPU
    try:
        assert beam(["--data", str(encoded), "--model_card", "gpt2.tiny", "--beam", "2", "--eval_len", "5",
                     "--output_file", str(files["predict.jsonl"]), "--no_progress"]) == 0
    finally:
        torch.set_num_threads(threads)
    assert [json.loads(line)["id"] for line in files["predict.jsonl"].read_text().splitlines()] == [0, 2, 4, 7]
    assert decode(files, vocab_dir) == 0
    assert len(files["pred.txt"].read_text(encoding="utf-8").splitlines()) == 4
    assert files["ref.txt"].read_text(encoding="utf-8").count("\n\n") == 4


# -- WebNLG and DART: the reference folder ----------------------------------------------------


def perfect_predictions(prepared: Path, split: str, path: Path) -> list[str]:
    """One prediction per distinct context: its first reference (so decode's output is checkable)."""
    texts = load_formatted(prepared / f"{split}_formatted.jsonl")
    encoded = load_encoded(prepared / f"{split}.jsonl")
    firsts: dict[str, int] = {}
    for index, pair in enumerate(texts):
        firsts.setdefault(pair.context, index)
    write_predictions(path, [{"id": i, "context": encoded[i].context, "predict": encoded[i].completion}
                             for i in firsts.values()])
    return [texts[i].completion for i in firsts.values()]


def decode_to_folder(prepared: Path, split: str, tmp_path: Path, vocab_dir: Path, *extra: str) -> int:
    return main(["--sample_file", str(tmp_path / "predict.jsonl"),
                 "--input_file", str(prepared / f"{split}_formatted.jsonl"),
                 "--output_ref_file", str(tmp_path / "references"), "--output_pred_file", str(tmp_path / "hypothesis"),
                 "--vocab", str(vocab_dir), *extra])


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def test_webnlg_reference_folder_on_the_test_set(webnlg_prepared, tmp_path, vocab_dir, capsys) -> None:
    out, _ = webnlg_prepared
    firsts = perfect_predictions(out, "test", tmp_path / "predict.jsonl")
    assert decode_to_folder(out, "test", tmp_path, vocab_dir, "--ref_type", "webnlg", "--ref_num", "6",
                            "--tokenize", "--lower") == 0
    assert "warning: 2 of 1862 contexts have more than 6 references: 3 references beyond the first 6" \
        in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "references").iterdir()) == [f"reference{k}" for k in range(6)]
    refs = [lines(tmp_path / "references" / f"reference{k}") for k in range(6)]
    hypothesis = lines(tmp_path / "hypothesis")
    assert [len(r) for r in refs] == [1862] * 6 and len(hypothesis) == 1862
    assert hypothesis == refs[0] == [post_process(text, tokenize=True, lower=True) for text in firsts]
    assert hypothesis[0] == "abilene , texas is served by the abilene regional airport ."
    # Context 1 has two references: reference2..5 repeat its first, as the paper's decoder pads.
    assert refs[1][0] == "abilene regional airport serves the city of abilene in texas ."
    assert [r[0] for r in refs[2:]] == [hypothesis[0]] * 4


@pytest.mark.parametrize("subset,count", [("seen", 971), ("unseen", 891)])
def test_webnlg_filter_keeps_seen_or_unseen_contexts(webnlg_prepared, tmp_path, vocab_dir, capsys, subset, count) -> None:
    out, _ = webnlg_prepared
    firsts = perfect_predictions(out, "test", tmp_path / "predict.jsonl")
    assert decode_to_folder(out, "test", tmp_path, vocab_dir, "--ref_type", "webnlg", "--filter", subset) == 0
    assert f"({1862 - count} predictions outside --filter {subset} not used)" in capsys.readouterr().err
    assert [len(lines(tmp_path / "references" / f"reference{k}")) for k in range(6)] == [count] * 6
    hypothesis = lines(tmp_path / "hypothesis")
    assert len(hypothesis) == count and set(hypothesis) <= set(firsts)
    seen_first = hypothesis[0] == firsts[0]  # the test file starts with Airport, a seen category
    assert seen_first == (subset == "seen")


def test_dart_reference_folder_and_its_default_ref_num(dart_prepared, tmp_path, vocab_dir, capsys) -> None:
    out, _ = dart_prepared
    perfect_predictions(out, "test", tmp_path / "predict.jsonl")
    assert decode_to_folder(out, "test", tmp_path, vocab_dir, "--ref_type", "dart", "--tokenize", "--lower") == 0
    err = capsys.readouterr().err
    assert "warning: 88 of 4159 contexts have more than 6 references: 576 references beyond the first 6" in err
    assert [len(lines(tmp_path / "references" / f"reference{k}")) for k in range(6)] == [4159] * 6
    assert len(lines(tmp_path / "hypothesis")) == 4159


def test_filter_needs_the_webnlg_category_flag(dart_prepared, tmp_path, vocab_dir, capsys) -> None:
    from nlg.cli import run_main

    out, _ = dart_prepared
    perfect_predictions(out, "valid", tmp_path / "predict.jsonl")
    assert run_main(main, ["--sample_file", str(tmp_path / "predict.jsonl"),
                           "--input_file", str(out / "valid_formatted.jsonl"), "--output_ref_file",
                           str(tmp_path / "references"), "--output_pred_file", str(tmp_path / "hypothesis"),
                           "--ref_type", "dart", "--filter", "seen", "--vocab", str(vocab_dir)]) == 2
    assert f"{out / 'valid_formatted.jsonl'}:1: no \"cate\"" in capsys.readouterr().err
    assert not (tmp_path / "references").exists() and not (tmp_path / "hypothesis").exists()


def test_ref_num_is_refused_for_e2e(files, vocab_dir) -> None:
    from nlg.files import InputError

    with pytest.raises(InputError, match="--ref_num does not apply to --ref_type e2e"):
        decode(files, vocab_dir, "--ref_num", "4")
    assert not files["ref.txt"].exists() and not files["pred.txt"].exists()


def test_reference_folder_is_not_written_over_other_files(webnlg_prepared, tmp_path, vocab_dir) -> None:
    from nlg.files import InputError

    out, _ = webnlg_prepared
    perfect_predictions(out, "valid", tmp_path / "predict.jsonl")
    (tmp_path / "references").mkdir()
    (tmp_path / "references" / "reference0").write_text("old\n")
    (tmp_path / "references" / "notes.txt").write_text("mine\n")
    with pytest.raises(InputError, match="holds other files than reference0, reference1, ... \\(notes.txt\\)"):
        decode_to_folder(out, "valid", tmp_path, vocab_dir, "--ref_type", "webnlg")
    assert (tmp_path / "references" / "reference0").read_text() == "old\n" and not (tmp_path / "hypothesis").exists()
    (tmp_path / "references" / "notes.txt").unlink()
    assert decode_to_folder(out, "valid", tmp_path, vocab_dir, "--ref_type", "webnlg", "--ref_num", "2") == 0
    assert sorted(p.name for p in (tmp_path / "references").iterdir()) == ["reference0", "reference1"]


def test_beam_on_dart_and_webnlg_contexts_then_decode(dart_prepared, webnlg_prepared, tmp_path, vocab_dir) -> None:
    """nlg beam needs no change for triple contexts (up to 3.4x as long as E2E's): the longest test contexts of DART and WebNLG."""
    import torch

    from nlg.beam import main as beam
    from nlg.pairs import jsonl_line

    dart_out, _ = dart_prepared
    webnlg_out, _ = webnlg_prepared
    picked, longest = [], []
    for out, count in ((dart_out, 1), (webnlg_out, 2)):
        texts, encoded = load_formatted(out / "test_formatted.jsonl"), load_encoded(out / "test.jsonl")
        lengths = {t.context: len(e.context) for t, e in zip(texts, encoded, strict=True)}
        contexts = sorted(lengths, key=lambda c: -lengths[c])[:count]
        longest.append(lengths[contexts[0]])
        picked += [(t, e) for t, e in zip(texts, encoded, strict=True) if t.context in contexts]
    assert longest == [146, 162]  # tokens, eos included; E2E's longest test context has 47
    (tmp_path / "formatted.jsonl").write_text("".join(jsonl_line(t) for t, _ in picked))
    (tmp_path / "encoded.jsonl").write_text("".join(jsonl_line(e) for _, e in picked))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert beam(["--data", str(tmp_path / "encoded.jsonl"), "--model_card", "gpt2.tiny", "--beam", "2",
                     "--eval_len", "4", "--output_file", str(tmp_path / "predict.jsonl"), "--no_progress"]) == 0
    finally:
        torch.set_num_threads(threads)
    assert len(lines(tmp_path / "predict.jsonl")) == 3
    assert main(["--sample_file", str(tmp_path / "predict.jsonl"), "--input_file", str(tmp_path / "formatted.jsonl"),
                 "--output_ref_file", str(tmp_path / "references"), "--output_pred_file", str(tmp_path / "hypothesis"),
                 "--ref_type", "dart", "--vocab", str(vocab_dir)]) == 0
    assert [len(lines(tmp_path / "references" / f"reference{k}")) for k in range(6)] == [3] * 6
