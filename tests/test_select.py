"""nlg select: the checkpoint decoded on test, chosen from a hand-made validation curve.

The checkpoints are stand-ins: a checkpoint-STEP folder with a training_state.pt and the
manifest `nlg train` writes last, which is all that listing and verifying look at. Nothing here
has a test split: selection has none to read.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nlg.cli import run_main
from nlg.files import write_manifest
from nlg.select import best_step, main, select

REPO = Path(__file__).resolve().parents[1]


def make_run(tmp_path: Path, steps: list[int], valid: dict[int, float] | None = None) -> Path:
    """A training run's folder: a verified stand-in checkpoint per step, and a metrics.jsonl
    with a training loss at every step and the given validation losses."""
    run = tmp_path / "lora"
    run.mkdir()
    for step in steps:
        checkpoint = run / f"checkpoint-{step}"
        checkpoint.mkdir(parents=True)
        (checkpoint / "training_state.pt").write_bytes(f"state {step}".encode())
        (checkpoint / "adapter_model.safetensors").write_bytes(f"weights {step}".encode())
        write_manifest(checkpoint)
    records = [{"step": step, "epoch": 1, "loss": 9.0 - step / 10} for step in steps]
    records += [{"step": step, "epoch": 1, "valid_loss": loss, "valid_ppl": 2.718 ** loss}
                for step, loss in (valid or {}).items()]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run


def scores_files(tmp_path: Path, values: dict[int, dict[str, float]]) -> dict[int, Path]:
    files = {}
    for step, scores in values.items():
        files[step] = tmp_path / f"scores-{step}.json"
        files[step].write_text(json.dumps(scores))
    return files


def run_select(*args: str) -> subprocess.CompletedProcess:
    """`nlg select ARGS` as a user runs it (a process: torch is imported, ~3 s)."""
    return subprocess.run([sys.executable, "-m", "nlg", "select", *map(str, args)], capture_output=True,
                          text=True, cwd=REPO)


@pytest.fixture
def nlg_select(capsys):
    """`nlg select ARGS` in this process, through the CLI's own error handling (run_main)."""

    def run(*args: str) -> subprocess.CompletedProcess:
        code = run_main(main, [str(arg) for arg in args], prog="nlg select")
        captured = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, captured.out, captured.err)

    return run


def test_valid_loss_picks_the_lowest_point_of_the_curve(tmp_path):
    # the curve falls, then rises: the middle checkpoint is the one to decode
    run = make_run(tmp_path, [100, 200, 300], valid={100: 3.4, 200: 3.1, 300: 3.25, 50: 2.0})
    selection = select(run, "valid_loss")
    assert selection.chosen_step == 200 and selection.checkpoint == str(run / "checkpoint-200")
    assert [(c.step, c.value) for c in selection.candidates] == [(100, 3.4), (200, 3.1), (300, 3.25)]
    assert selection.metric is None  # step 50 has no checkpoint: not a candidate


def test_valid_loss_after_a_resume_takes_the_steps_last_record(tmp_path):
    run = make_run(tmp_path, [100, 200], valid={100: 3.0, 200: 3.5})
    with (run / "metrics.jsonl").open("a") as handle:  # a resumed run validated step 200 again
        handle.write(json.dumps({"step": 200, "epoch": 1, "valid_loss": 2.9, "valid_ppl": 18.2}) + "\n")
    assert select(run, "valid_loss").chosen_step == 200


def test_ties_go_to_the_earliest_step():
    assert best_step({300: 1.0, 100: 1.0, 200: 2.0}, lower_is_better=True) == 100
    assert best_step({300: 5.0, 100: 5.0, 200: 2.0}, lower_is_better=False) == 100


def test_valid_metric_takes_the_best_score_highest_or_lowest_for_ter(tmp_path):
    run = make_run(tmp_path, [100, 200, 300])
    files = scores_files(tmp_path, {100: {"BLEU": 40.0, "TER": 0.50}, 200: {"BLEU": 45.5, "TER": 0.47},
                                    300: {"BLEU": 44.0, "TER": 0.41}})
    bleu = select(run, "valid_metric", "BLEU", files)
    assert bleu.chosen_step == 200 and bleu.metric == "BLEU"
    assert [c.value for c in bleu.candidates] == [40.0, 45.5, 44.0]
    assert select(run, "valid_metric", "TER", files).chosen_step == 300


def test_last_takes_the_newest_checkpoint_by_number(tmp_path):
    run = make_run(tmp_path, [800, 1000, 90])
    selection = select(run, "last")
    assert selection.chosen_step == 1000 and [c.value for c in selection.candidates] == [None] * 3


def test_cli_writes_selection_json(tmp_path, nlg_select):
    run = make_run(tmp_path, [5, 10], valid={5: 4.0, 10: 4.5})
    out = tmp_path / "selection.json"
    result = nlg_select(run, "--criterion", "valid_loss", "--out", out)
    assert result.returncode == 0, result.stderr
    assert json.loads(out.read_text()) == {
        "criterion": "valid_loss", "metric": None, "chosen_step": 5, "checkpoint": str(run / "checkpoint-5"),
        "candidates": [{"step": 5, "value": 4.0}, {"step": 10, "value": 4.5}]}
    listed = nlg_select(run, "--list")
    assert listed.stdout.splitlines() == [str(run / "checkpoint-5"), str(run / "checkpoint-10")]


# ---------------------------------------------------------------------------------------------
# Failures: one line, exit 2, nothing written
# ---------------------------------------------------------------------------------------------


def one_line_failure(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("nlg select: error: ")
    return result.stderr


def test_a_candidate_that_fails_verification_is_named(tmp_path, nlg_select):
    run = make_run(tmp_path, [5, 10], valid={5: 4.0, 10: 4.5})
    (run / "checkpoint-5" / "adapter_model.safetensors").write_bytes(b"weights 6")  # changed after saving
    out = tmp_path / "selection.json"
    error = one_line_failure(run_select(run, "--criterion", "valid_loss", "--out", out))
    assert f"candidate checkpoint {run / 'checkpoint-5'} fails verification" in error
    assert "adapter_model.safetensors" in error and not out.exists()
    assert "fails verification" in one_line_failure(nlg_select(run, "--list"))


def test_a_candidate_without_a_validation_loss_is_named(tmp_path, nlg_select):
    run = make_run(tmp_path, [5, 10, 15], valid={10: 4.0})
    error = one_line_failure(nlg_select(run, "--criterion", "valid_loss", "--out", tmp_path / "s.json"))
    assert "no valid_loss at step(s) 5, 15" in error and "EVAL_INTERVAL" in error


def test_scores_must_cover_every_candidate_and_hold_the_metric(tmp_path, nlg_select):
    run = make_run(tmp_path, [5, 10])
    files = scores_files(tmp_path, {5: {"BLEU": 1.0}, 10: {"TER": 0.5}, 15: {"BLEU": 2.0}})
    out = tmp_path / "s.json"
    missing = nlg_select(run, "--criterion", "valid_metric", "--metric", "BLEU", "--scores", f"5={files[5]}",
                         "--out", out)
    assert "missing: 10" in one_line_failure(missing)
    extra = nlg_select(run, "--criterion", "valid_metric", "--metric", "BLEU", "--scores", f"5={files[5]}",
                       f"10={files[10]}", f"15={files[15]}", "--out", out)
    assert "no such checkpoint: 15" in one_line_failure(extra)
    no_metric = nlg_select(run, "--criterion", "valid_metric", "--metric", "BLEU", "--scores", f"5={files[5]}",
                           f"10={files[10]}", "--out", out)
    assert f"{files[10]}: no BLEU score (it has: TER)" in one_line_failure(no_metric)
    files[10].write_text('{"BLEU": NaN}')
    assert "not a finite number" in one_line_failure(nlg_select(
        run, "--criterion", "valid_metric", "--metric", "BLEU", "--scores", f"5={files[5]}", f"10={files[10]}",
        "--out", out))
    assert not out.exists()


@pytest.mark.parametrize("setup", ["empty", "no metrics"])
def test_nothing_to_select_from(tmp_path, setup, nlg_select):
    run = make_run(tmp_path, [] if setup == "empty" else [5])
    if setup == "no metrics":
        (run / "metrics.jsonl").unlink()
    error = one_line_failure(nlg_select(run, "--criterion", "valid_loss", "--out", tmp_path / "s.json"))
    assert ("no checkpoint to select from" if setup == "empty" else "metrics.jsonl: missing") in error


@pytest.mark.parametrize("target", ["metrics.jsonl", "checkpoint-5/training_state.pt",
                                    "checkpoint-10/adapter_model.safetensors", "checkpoint-10/manifest.json",
                                    "checkpoint-5/selection.json", "scores"])
def test_out_is_never_an_input(tmp_path, target, nlg_select):
    """Issue 29 case 7: --out over the training log, a file of a candidate checkpoint (or a new
    file inside one), or a scores file is refused before any work; every input is unchanged."""
    run = make_run(tmp_path, [5, 10], valid={5: 4.0, 10: 4.5})
    files = scores_files(tmp_path, {5: {"BLEU": 1.0}, 10: {"BLEU": 2.0}})
    out = files[10] if target == "scores" else run / target
    before = {p: p.read_bytes() for p in [*run.rglob("*"), *files.values()] if p.is_file()}
    by_metric = ["valid_metric", "--metric", "BLEU", "--scores", f"5={files[5]}", f"10={files[10]}"]
    for criterion in ([by_metric] if target == "scores" else [["valid_loss"], by_metric]):
        error = one_line_failure(nlg_select(run, "--criterion", *criterion, "--out", out))
        assert f"--out {out}" in error and ("refusing to write over it" in error or "inside" in error)
    assert {p: p.read_bytes() for p in [*run.rglob("*"), *files.values()] if p.is_file()} == before
    assert not (run / "checkpoint-5" / "selection.json").exists()


def test_out_beside_the_checkpoints_is_fine(tmp_path, nlg_select):
    run = make_run(tmp_path, [5], valid={5: 4.0})
    assert nlg_select(run, "--criterion", "valid_loss", "--out", run / "selection.json").returncode == 0


def test_printed_values_keep_their_order(tmp_path, nlg_select):
    run = make_run(tmp_path, [5, 10], valid={5: 3.02001, 10: 3.02})
    result = nlg_select(run, "--criterion", "valid_loss", "--out", tmp_path / "s.json")
    assert result.returncode == 0 and "5: 3.02001, 10: 3.02)" in result.stdout
