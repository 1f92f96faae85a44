"""The whole chain through scripts/e2e.sh --demo, shrunk to about a minute.

data -> pretrain (full fine-tune of a random tiny GPT-2) -> LoRA train -> beam -> decode -> score.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "e2e.sh"


def run_script(*args: str, env: dict[str, str] | None = None, timeout: int = 900):
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def test_help_documents_every_setting():
    result = run_script("--help")
    assert result.returncode == 0
    # every environment setting the script reads (NAME=${NAME:-...}) is in --help
    settings = set(re.findall(r"\$\{([A-Z_]+):-", SCRIPT.read_text()))
    settings -= {"OUT"}
    missing = sorted(name for name in settings if name not in result.stdout)
    assert not missing, f"undocumented settings: {missing}"


def test_unknown_argument_and_stage_fail():
    assert run_script("--bogus").returncode == 2
    result = run_script("--from", "nowhere", env={**os.environ, "WORK_DIR": "/tmp/nlg-nowhere"})
    assert result.returncode != 0 and "unknown stage" in result.stderr


@pytest.fixture(scope="module")
def demo(tmp_path_factory, e2e_raw_dir, vocab_dir):
    if not (e2e_raw_dir / "valid.txt").is_file():
        pytest.skip("shared E2E data missing")
    work = tmp_path_factory.mktemp("demo")
    env = {
        **os.environ,
        # the script calls `python`: make it this interpreter
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "NLG": f"{sys.executable} -m nlg",
        "OMP_NUM_THREADS": "1",
        "E2E_RAW_DIR": str(e2e_raw_dir),
        "NLG_VOCAB_DIR": str(vocab_dir),
        "WORK_DIR": str(work / "run"),
        "DATA_DIR": str(work / "data"),
        "PRETRAIN_STEPS": "40",
        "MAX_STEP": "20",
        "BATCH": "8",
        "WARMUP": "5",
        "SEQ_LEN": "96",
        "SAVE_INTERVAL": "10",
        "EVAL_INTERVAL": "20",
        "TEST_LIMIT": "6",
        "BEAM": "2",
        "EVAL_LEN": "12",
        "BEAM_BATCH": "4",
    }
    result = run_script("--demo", env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return work / "run", env, result


def test_demo_runs_every_stage_to_a_scores_table(demo):
    run, _, result = demo
    for stage in ("data", "pretrain", "train", "beam", "decode", "score"):
        assert (run / f".done-{stage}").is_file(), stage
    predictions = [json.loads(line) for line in (run / "predict.jsonl").read_text().splitlines()]
    assert len(predictions) == 6
    assert len((run / "e2e_pred.txt").read_text().splitlines()) == 6
    references = (run / "e2e_ref.txt").read_text().split("\n\n")
    assert len([block for block in references if block.strip()]) == 6
    scores = json.loads((run / "scores.json").read_text())
    assert {"BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr"} <= set(scores)
    assert isinstance(scores["BLEU"], float) and isinstance(scores["NIST"], float)
    table = (run / "results.md").read_text()
    assert "| BLEU |" in table and "| CIDEr |" in table
    results = json.loads((run / "results.json").read_text())
    assert results["model_card"] == "gpt2.tiny"
    # the demo scores the same card untrained beside it
    assert set(results["results"]["BLEU"]) == {"this_run", "untrained"}
    assert "untrained gpt2.tiny" in table
    # the stand-in pre-training learnt something
    pretrain = [json.loads(x) for x in (run / "pretrain" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in pretrain if "loss" in r]
    assert losses[-1] < losses[0] - 1.0
    assert (run / "lora" / "checkpoint-20" / "adapter_model.safetensors").is_file()
    assert "SCORES:" in result.stdout


def test_rerun_skips_finished_stages_and_from_reruns(demo):
    run, env, _ = demo
    before = (run / "predict.jsonl").stat().st_mtime_ns
    again = run_script("--demo", env=env)
    assert again.returncode == 0
    assert "== train" not in again.stderr and "== beam" not in again.stderr
    assert (run / "predict.jsonl").stat().st_mtime_ns == before
    decode = run_script("--demo", "--from", "decode", env=env)
    assert decode.returncode == 0, decode.stderr[-2000:]
    assert "== decode" in decode.stderr and "== beam" not in decode.stderr
    assert "SCORES:" in decode.stdout
