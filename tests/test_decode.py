"""`nlg decode`: the paper's reference/prediction file format, and mismatches stop with counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nlg.decode import cut, main, post_process

LINES = [0, 1, 2, 3, 4, 5, 6, 1160, 1161]  # three Blue Spice contexts (2, 2, 3 refs) + one with a £


@pytest.fixture(scope="module")
def tokenizer(vocab_dir: Path):
    from nlg.tokenizer import load_tokenizer

    return load_tokenizer(vocab_dir)


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
