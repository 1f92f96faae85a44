"""nlg.results.sweep: a sweep's table, and its point chosen on validation without reading test.

Run directories are made by hand as the pipeline leaves them: run.json, a scores file per
subset (with its "scored" record), selection.json and the training log beside the checkpoint.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from nlg import methods
from nlg.results.sweep import choose, sweep_table, validation, write_sweep


def scores_json(values: dict) -> str:
    scored = {"suite": "e2e", "dataset": "e2e", "metrics": list(values), "instances": 3,
              "references_sha256": "0" * 64, "predictions_sha256": "1" * 64, "options": {}}
    return json.dumps({**values, "scored": scored})


@pytest.fixture
def point_run(tmp_path, write):
    """point_run(point, seed, valid={step: loss}, chosen=STEP, test={metric: value}, params,
    selection=...) -> the run directory WORK/sweep/POINT/seed-SEED."""

    def make(point: str, seed: int, valid: dict[int, float], chosen: int, test: dict, params: int = 1000,
             criterion: str = "valid_loss", candidates: list | None = None, settings: dict | None = None) -> Path:
        run = tmp_path / "sweep" / point / f"seed-{seed}"
        checkpoint = run / "lora" / f"checkpoint-{chosen}"
        checkpoint.mkdir(parents=True)
        log = [{"step": step, "epoch": 1, "valid_loss": loss} for step, loss in valid.items()]
        write(run / "lora" / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in log))
        candidates = candidates or [{"step": step, "value": loss} for step, loss in valid.items()]
        selection = {"criterion": criterion, "metric": "BLEU" if criterion == "valid_metric" else None,
                     "chosen_step": chosen, "checkpoint": str(checkpoint), "candidates": candidates}
        write(run / "selection.json", json.dumps(selection))
        write(run / "scores.json", scores_json(test))
        record = {"dataset": "e2e", "model_card": "gpt2.md", "method": "lora", "seed": seed, "params": params,
                  "settings": {"LR": "2e-4", **(settings or {}), "SEED": str(seed)},
                  "checkpoint": f"lora/checkpoint-{chosen}", "selection": None,
                  "subsets": {"all": {"scores": "scores.json", "references": "e2e_ref.txt",
                                      "predictions": "e2e_pred.txt"}}, "untrained": None}
        write(run / "run.json", json.dumps(record))
        return run

    return make


TEST = {"BLEU": 0.68, "NIST": 8.7, "METEOR": 0.46, "ROUGE_L": 0.71, "CIDEr": 2.4}


def rank_sweep(point_run) -> list[tuple[dict, list[Path]]]:
    """Three ranks, two seeds: r=4 is best on validation, r=16 on test."""
    found = []
    for rank, losses, bleu in (("1", (3.0, 3.2), 0.60), ("4", (2.5, 2.6), 0.62), ("16", (2.8, 2.7), 0.70)):
        dirs = [point_run(f"lora_dim-{rank}", seed, {10: loss + 1, 20: loss}, 20, {**TEST, "BLEU": bleu + seed / 1e4},
                          params=int(rank) * 1000, settings={"LORA_DIM": rank})
                for seed, loss in zip((110, 111), losses, strict=True)]
        found.append(({"LORA_DIM": rank}, dirs))
    return found


def test_the_point_best_on_validation_is_chosen_without_reading_test(point_run):
    sweep = rank_sweep(point_run)
    chosen = choose([dirs for _, dirs in sweep], "valid_loss", "BLEU")
    assert chosen.index == 1 and chosen.criterion == "validation loss"  # r=4, though r=16 is best on test
    assert [round(v.mean, 4) for v in chosen.values] == [3.1, 2.55, 2.75]
    # every test file gone (scores, predictions, references, run.json): the choice is the same
    for _, dirs in sweep:
        for run in dirs:
            for path in run.iterdir():
                if path.name not in ("selection.json", "lora"):
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
    again = choose([dirs for _, dirs in sweep], "valid_loss", "BLEU")
    assert again.index == 1 and [v.mean for v in again.values] == [v.mean for v in chosen.values]


def test_validation_is_the_training_logs_loss_at_the_selected_step(point_run):
    run = point_run("lora_dim-4", 110, {10: 3.0, 20: 2.5, 30: 2.9}, 30, TEST)
    value = validation(run)  # SELECT=last: the last checkpoint, its validation loss, not the lowest
    assert (value.step, value.loss, value.metric) == (30, 2.9, None)


def test_valid_metric_chooses_by_the_selected_candidates_value(point_run):
    runs = [[point_run(f"beam-{beam}", 110, {10: 2.0}, 10, TEST, criterion="valid_metric",
                       candidates=[{"step": 10, "value": bleu}])] for beam, bleu in (("2", 0.61), ("5", 0.65))]
    chosen = choose(runs, "valid_metric", "BLEU")
    assert chosen.index == 1 and chosen.criterion == "validation BLEU"  # higher is better
    assert choose(runs, "valid_metric", "TER").index == 0  # TER: lower is better


def test_without_validation_no_point_is_chosen(point_run):
    runs = [[point_run(f"lora_dim-{r}", 110, {}, 20, TEST)] for r in (1, 4)]
    chosen = choose(runs, "last", "BLEU")
    assert chosen.index is None and "no validation loss" in chosen.reason
    assert "test split is never used to choose" in chosen.reason


def test_the_table_has_a_row_per_point_and_marks_the_chosen_one(point_run, tmp_path):
    sweep = rank_sweep(point_run)
    text, report, _ = sweep_table("e2e", ["LORA_DIM"], sweep, "valid_loss", "BLEU", "lora", "gpt2.md")
    lines = text.splitlines()
    assert lines[0] == "| LORA_DIM | params | seeds | valid loss | BLEU | NIST | METEOR | ROUGE_L | CIDEr | chosen |"
    # means ± sample std over the two seeds; BLEU on the paper's scale (percent)
    assert lines[2].startswith("| 1 | 0.001M | 2 | 3.100±0.141 | 61.11±.01")
    assert lines[3].endswith("| **chosen** |") and lines[3].startswith("| 4 | 0.004M | 2 | 2.550±0.071 |")
    assert not lines[4].endswith("**chosen** |")
    assert "Chosen: LORA_DIM=4." in text
    # the paper's rank sweep (Table 18) is named, its rows not recorded (not found)
    assert "Table 18" in text and "not recorded" in text
    assert report["chosen"]["values"] == {"LORA_DIM": "4"} and report["chosen"]["validation"]["n"] == 2
    assert report["points"][2]["scores"]["all"]["BLEU"]["mean"] == pytest.approx(71.105)
    assert report["paper"]["rows"] is None
    md, js, png = tmp_path / "r.md", tmp_path / "r.json", tmp_path / "r.png"
    write_sweep("e2e", ["LORA_DIM"], sweep, "valid_loss", "BLEU", "lora", "gpt2.md", md, js, png)
    assert md.read_text() == text and json.loads(js.read_text()) == json.loads(json.dumps(report))
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_recorded_paper_rows_are_shown_beside_ours(point_run, monkeypatch):
    lora = methods.get("lora")
    rows = {"1": {"val_loss": 9.9, "BLEU": 11.1}, "4": {"val_loss": 8.8, "BLEU": 22.2}}  # stand-ins, not the paper's
    monkeypatch.setattr(lora, "paper_sweeps", {("e2e", ("LORA_DIM",)): {"source": "S", "card": "gpt2.md",
                                                                        "rows": rows, "note": ""}})
    sweep = rank_sweep(point_run)
    text, _, _ = sweep_table("e2e", ["LORA_DIM"], sweep, "valid_loss", "BLEU", "lora", "gpt2.md")
    assert "The paper's rows (S, gpt2.md; ours above are gpt2.md):" in text
    assert "| LORA_DIM | val_loss | BLEU |" in text and "| 4 | 8.8 | 22.2 |" in text
    # a sweep of another setting has none
    lr = sweep_table("e2e", ["LR"], [({"LR": "2e-4"}, sweep[0][1])], "valid_loss", "BLEU",
                     "lora", "gpt2.md")[0]
    assert "paper" not in lr.split("\n\n", 2)[-1]
