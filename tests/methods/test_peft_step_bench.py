"""bench/peft_step.py (issue 27 item 7): one tiny run, so that the benchmark cannot rot."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "peft_step.py"


@pytest.fixture(scope="module")
def peft_step():
    pytest.importorskip("peft")
    spec = importlib.util.spec_from_file_location("peft_step", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["peft_step"] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules["peft_step"]


def test_a_tiny_run_times_both_sides_of_the_same_model(peft_step, tmp_path, capsys) -> None:
    out = tmp_path / "peft_step.json"
    assert peft_step.main(["--n_layer", "1", "--n_embd", "64", "--n_head", "2", "--vocab", "64", "--batch", "2",
                           "--length", "6", "--batches", "1", "--repeats", "1", "--steps", "1", "--warmup", "0",
                           "--methods", "lora,ia3,adapter-l", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "adapter-l: skipped, its files are not PEFT's" in printed
    report = json.loads(out.read_text())
    assert [(r["method"], r["peft_type"]) for r in report["rows"]] == [("lora", "LORA"), ("ia3", "IA3")]
    for row in report["rows"]:
        assert row["ours_ms"] > 0 and row["peft_ms"] > 0 and row["ratio"] == row["ours_ms"] / row["peft_ms"]
        assert row["counts_agree"] and row["ours_trainable"] == row["peft_trainable"] > 0
        assert row["logits_max_diff"] < 1e-5  # the same model on both sides before the first step


def test_an_unknown_method_is_one_line(peft_step, capsys) -> None:
    assert peft_step.main(["--methods", "lora,nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope" in err
