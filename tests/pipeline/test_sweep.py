"""reproduce.sh --sweep (nlg.pipeline.sweep): the settings that can be swept and the refusals, the
grid and its point directories, the listing for schedulers, refusal of points made otherwise,
decoding points sharing their training point, and gathering that names what has not finished.
Most of it without running a stage (records written by the pipeline's own functions); one e2e
test runs two points as separate processes at toy size and gathers their table."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from nlg.pipeline import chain
from nlg.pipeline.settings import Refusal, resolve
from nlg.pipeline.stages import Records, mark_done
from nlg.pipeline.sweep import (
    check_points,
    parse_axes,
    point_command,
    points,
    share_training,
    share_untrained,
    stage_of,
    sweep_removals,
    tasks,
    unfinished,
)

REPO = Path(__file__).resolve().parents[2]
ENV = {"NPROC": "1"}


def sweep(tmp_path: Path, *specs: str, demo: bool = True, seeds: str = "", **environ: str):
    env = {**os.environ, **ENV, "WORK_DIR": str(tmp_path / "run"), **environ}  # as `reproduce` below sees it
    base = resolve("e2e", env, demo=demo, seed_count=seeds)
    axes = parse_axes(list(specs), base)
    return base, axes, points(axes, "e2e", env, demo, "", seeds, base)


@pytest.fixture
def reproduce(capsys, monkeypatch, tmp_path):
    """reproduce(*args, **environ) -> (exit status, stdout, stderr) of `nlg reproduce` in this
    process, WORK_DIR in tmp_path."""

    def run(*args: str, **environ: str):
        for name, value in {**ENV, "WORK_DIR": str(tmp_path / "run"), **environ}.items():
            monkeypatch.setenv(name, value)
        code = chain.main(list(args))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


# ---- what can be swept ---------------------------------------------------------------------


def test_training_and_decoding_settings_are_swept_at_their_stage(tmp_path):
    base = resolve("e2e", {**ENV, "WORK_DIR": str(tmp_path)}, demo=True)
    stages = {name: stage_of(name, base) for name in ("LR", "WEIGHT_DECAY", "LORA_DIM", "LORA_ALPHA", "BATCH",
                                                      "BEAM", "LENGTH_PENALTY", "TEST_LIMIT", "PRETRAIN_LR")}
    # BATCH is the demo's pre-training's too, but a run directory's stage records it first
    assert stages == {"LR": "train", "WEIGHT_DECAY": "train", "LORA_DIM": "train", "LORA_ALPHA": "train",
                      "BATCH": "train", "BEAM": "beam", "LENGTH_PENALTY": "beam", "TEST_LIMIT": "beam",
                      "PRETRAIN_LR": "pretrain"}
    # with SELECT=valid_metric the beam settings choose the checkpoint: select records them
    chosen = resolve("e2e", {**ENV, "WORK_DIR": str(tmp_path), "VALID_SPLIT": "valid", "SELECT": "valid_metric"})
    assert stage_of("BEAM", chosen) == "select"
    # another method's own flags are settings of that method
    adapter = resolve("e2e", {**ENV, "WORK_DIR": str(tmp_path)}, demo=True, method_flag="adapter-h")
    assert [axis.stage for axis in parse_axes(["ADAPTER_DIM=4,8"], adapter)] == ["train"]


@pytest.mark.parametrize("spec, message", [
    ("LORA_DIMM=1,2", "--sweep LORA_DIMM: not a numeric setting of reproduce.sh --method lora"),
    ("ADAPTER_DIM=4", "--sweep ADAPTER_DIM: not a numeric setting of reproduce.sh --method lora"),
    ("LORA_DIM=1,x", "--sweep LORA_DIM=1,x: LORA_DIM='x' is not a whole number >= 1"),
    ("LORA_DIM=0", "LORA_DIM='0' is not a whole number >= 1"),
    ("LR=2e-4,0", "LR='0' is not a number > 0"),
    ("LENGTH_PENALTY=0.8,,1", "empty value"),
    ("LORA_DIM=4,4", "--sweep LORA_DIM=4,4: 4 given more than once"),
    ("LORA_DIM", "expected NAME=V1,V2,..."),
    ("SEED=1,2", "use --seeds N"),
    ("PRETRAIN_LR=1e-3,3e-3", "a setting of the shared pretrain stage"),
    ("BEAM_BATCH=4,8", "no stage records it"),
])
def test_a_bad_sweep_is_one_line_before_any_work(reproduce, tmp_path, spec, message):
    code, out, err = reproduce("e2e", "--demo", "--sweep", spec)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("reproduce.sh: ") and message in err, err
    assert not (tmp_path / "run").exists()  # nothing was run


def test_a_setting_swept_twice_and_point_flags_without_a_sweep_are_refused(reproduce):
    code, _, err = reproduce("e2e", "--demo", "--sweep", "LR=1e-3", "--sweep", "LR=2e-3")
    assert code == 2 and "--sweep LR: given twice" in err
    for flag in (["--points"], ["--gather"], ["--point", "0"]):
        code, _, err = reproduce("e2e", "--demo", *flag)
        assert code == 2 and "is of a sweep" in err


def test_a_point_the_method_refuses_is_named(tmp_path):
    # each point is resolved as a run of its own: LoRA's own check sees the point's values
    with pytest.raises(Refusal, match=r"^--sweep point lora_alpha-1e\+40: "):
        sweep(tmp_path, "LORA_ALPHA=16,1e+40")


# ---- the grid, its directories, the listing -----------------------------------------------


def test_a_grid_is_every_combination_each_in_its_directory(tmp_path):
    base, axes, grid = sweep(tmp_path, "LORA_DIM=1,4", "LR=2e-3,1e-3", seeds="2")
    assert [point.name for point in grid] == ["lora_dim-1_lr-2e-3", "lora_dim-1_lr-1e-3",
                                              "lora_dim-4_lr-2e-3", "lora_dim-4_lr-1e-3"]
    for point in grid:
        assert re.fullmatch(r"[a-z0-9_.+-]+", point.name)
        assert point.settings.work_dir == base.work_dir  # shared stages in one WORK_DIR
        assert point.settings["LORA_DIM"] == point.values[0][1] and point.settings["LR"] == point.values[1][1]
        assert point.settings["LORA_ALPHA"] == base["LORA_ALPHA"]  # the rest as unswept
    assert [(point.name, seed) for point, seed in tasks(grid)][:3] == [
        ("lora_dim-1_lr-2e-3", 110), ("lora_dim-1_lr-2e-3", 111), ("lora_dim-1_lr-1e-3", 110)]
    assert grid[2].run_dir(111) == tmp_path / "run" / "sweep" / "lora_dim-4_lr-2e-3" / "seed-111"
    # without --seeds each point runs SEED alone
    _, _, single = sweep(tmp_path, "BEAM=2,5")
    assert [(p.name, seed) for p, seed in tasks(single)] == [("beam-2", 110), ("beam-5", 110)]


def test_points_lists_one_command_per_point_and_seed(reproduce, tmp_path):
    code, out, _ = reproduce("e2e", "--demo", "--sweep", "LORA_DIM=1,4", "--seeds", "2", "--points")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 4 and not (tmp_path / "run").exists()
    for index, line in enumerate(lines):
        assert line == f"scripts/reproduce.sh e2e --demo --sweep LORA_DIM=1,4 --seeds 2 --point {index}"
        assert chain.parse_args(line.split()[1:]).point == str(index)
    code, _, err = reproduce("e2e", "--demo", "--sweep", "LORA_DIM=1,4", "--seeds", "2", "--point", "4")
    assert code == 2 and "--point 4: not one of 0..3" in err
    assert point_command(["e2e", "--sweep", "LR=1e-3", "--point", "2", "--gather"], 1) == \
        "scripts/reproduce.sh e2e --sweep LR=1e-3 --point 1"


# ---- refusal, sharing, gathering (records written as the stages write them) ---------------


def finish(point, seed: int, until: str) -> Path:
    """Mark `point`'s stages up to `until` finished with its settings, as the chain does."""
    from nlg.pipeline.stages import NAMES, STAGES

    run = point.run_dir(seed)
    run.mkdir(parents=True, exist_ok=True)
    records = Records(point.settings)
    for stage in STAGES[NAMES.index("train"):NAMES.index(until) + 1]:
        if stage.applies(point.settings):
            mark_done(records, stage.name, run, seed)
    return run


def test_a_point_made_with_other_settings_is_refused_naming_them(tmp_path):
    _, _, grid = sweep(tmp_path, "LORA_DIM=1,4")
    finish(grid[1], 110, "beam")
    check_points(grid)  # fits
    _, _, changed = sweep(tmp_path, "LORA_DIM=1,4", LR="1e-3")
    with pytest.raises(Refusal, match=r"lora_dim-4/seed-110/\.done-train was made with other settings: "
                                      r"LR=2e-3 \(now 1e-3\); redo it and every later stage with --from train"):
        check_points(changed)


def test_decoding_points_share_their_training_point(tmp_path):
    _, _, grid = sweep(tmp_path, "LORA_DIM=1,4", "BEAM=2,5")
    donor = finish(grid[0], 110, "select")  # lora_dim-1_beam-2
    (donor / "lora" / "checkpoint-10").mkdir(parents=True)
    (donor / "selection.json").write_text(json.dumps({"checkpoint": str(donor / "lora" / "checkpoint-10")}))
    beam5, other_rank = grid[1], grid[3]
    assert share_training(beam5, 110, grid, Records(beam5.settings)) == donor
    run = beam5.run_dir(110)
    assert (run / "lora").is_symlink() and (run / "lora").resolve() == (donor / "lora").resolve()
    assert (run / ".done-train").read_text() == (donor / ".done-train").read_text()
    assert json.loads((run / "selection.json").read_text())["checkpoint"].endswith("lora_dim-1_beam-2/seed-110/"
                                                                                   "lora/checkpoint-10")
    check_points(grid)  # the shared records are the point's own
    assert share_training(other_rank, 110, grid, Records(other_rank.settings)) is None  # another rank trains
    assert not (other_rank.run_dir(110) / "lora").exists()


def test_the_demos_untrained_search_is_copied_where_made_alike(tmp_path):
    _, _, grid = sweep(tmp_path, "LORA_DIM=1,4", "BEAM=2,5")
    donor = finish(grid[0], 110, "untrained")
    (donor / "untrained").mkdir()
    (donor / "untrained" / "predict.jsonl").write_text("{}\n")
    other_rank, other_beam = grid[2], grid[3]  # lora_dim-4_beam-2, lora_dim-4_beam-5
    assert share_untrained(other_rank, 110, grid, Records(other_rank.settings)) == donor
    assert (other_rank.run_dir(110) / "untrained" / "predict.jsonl").read_text() == "{}\n"
    assert share_untrained(other_beam, 110, grid, Records(other_beam.settings)) is None  # searched otherwise


def test_from_redoes_a_stage_in_every_point_and_a_shared_one_in_work_dir(tmp_path):
    base, _, grid = sweep(tmp_path, "LORA_DIM=1,4", "BEAM=2,5")
    for point in grid:
        finish(point, 110, "score")
    runs = [point.run_dir(110) for point in grid]
    (runs[1] / "lora").symlink_to(tmp_path)  # a decoding point's link to its training point's
    beam = sweep_removals(base, tasks(grid), "beam")
    assert {run / ".done-beam" for run in runs} <= set(beam) and not {run / ".done-train" for run in runs} & set(beam)
    assert base.work_dir / ".done-data" not in beam
    train = sweep_removals(base, tasks(grid), "train")
    assert runs[1] / "lora" in train  # the link, not what it points to (remove() unlinks a link)
    pretrain = sweep_removals(base, tasks(grid), "pretrain")
    assert base.work_dir / ".done-pretrain" in pretrain and {run / ".done-train" for run in runs} <= set(pretrain)
    assert base.work_dir / ".done-data" not in pretrain


def test_gather_names_each_point_not_finished_with_its_command(reproduce, tmp_path):
    _, _, grid = sweep(tmp_path, "LORA_DIM=1,4", seeds="2")
    finish(grid[0], 110, "score")
    finish(grid[1], 110, "beam")
    assert [(p.name, seed, why) for _, p, seed, why in unfinished(grid)] == [
        ("lora_dim-1", 111, "not started"), ("lora_dim-4", 110, "not finished"), ("lora_dim-4", 111, "not started")]
    code, out, err = reproduce("e2e", "--demo", "--sweep", "LORA_DIM=1,4", "--seeds", "2", "--gather")
    assert code == 1 and out == ""
    assert "3 of 4 not finished" in err and "lora_dim-4 seed 110" in err
    assert "`scripts/reproduce.sh e2e --demo --sweep LORA_DIM=1,4 --seeds 2 --point 2`" in err


# ---- end to end: two points as separate processes, then the table ------------------------


def test_two_points_run_as_separate_processes_then_gather(tmp_path, vocab_dir, e2e_raw_dir):
    if not (e2e_raw_dir / "valid.txt").is_file():
        pytest.skip("shared E2E data missing")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "NLG": f"{sys.executable} -m nlg", "OMP_NUM_THREADS": "1", "NLG_VOCAB_DIR": str(vocab_dir),
           "E2E_RAW_DIR": str(e2e_raw_dir), "WORK_DIR": str(tmp_path / "run"), "DATA_DIR": str(tmp_path / "data"),
           "MAX_STEP": "10", "BATCH": "8", "WARMUP": "5", "SAVE_INTERVAL": "5", "VALID_SPLIT": "", "TEST_LIMIT": "6",
           "BEAM": "2", "EVAL_LEN": "12", "BEAM_BATCH": "4", "NPROC": "1", "PRETRAIN_STEPS": "20", "SEQ_LEN": "96"}
    script = ["bash", str(REPO / "scripts" / "reproduce.sh"), "e2e", "--demo", "--sweep", "LORA_DIM=1,2"]

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*script, *args], env=env, capture_output=True, text=True, timeout=900, cwd=REPO)

    listed = run("--points").stdout.splitlines()
    assert len(listed) == 2
    # side by side, as two array tasks: the shared stages once (the lock), each its own point
    processes = [subprocess.Popen([*script, "--point", str(k)], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, cwd=REPO) for k in range(2)]
    outputs = [process.communicate(timeout=900) for process in processes]
    for process, (out, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, out[-2000:] + err[-3000:]
    stages = [re.findall(r"^== (data|pretrain|train)", err, re.MULTILINE) for _, err in outputs]
    assert sorted(stages, key=len) == [["train"], ["data", "pretrain", "train"]]
    gathered = run("--gather")
    assert gathered.returncode == 0, gathered.stderr[-3000:]
    table = (tmp_path / "run" / "sweep" / "results.md").read_text()
    assert gathered.stdout == table
    assert table.startswith("| LORA_DIM | params | seeds | valid loss | BLEU | NIST | METEOR | ROUGE_L | CIDEr |")
    assert re.search(r"^\| 1 \| 0\.00282M \| 1 \| n/a \|", table, re.MULTILINE)
    assert re.search(r"^\| 2 \| 0\.00563M \| 1 \| n/a \|", table, re.MULTILINE)
    # the E2E demo validates on nothing: no point is chosen, and the test split does not choose one
    assert "No point chosen" in table and "Table 18" in table and "not recorded" in table
    report = json.loads((tmp_path / "run" / "sweep" / "results.json").read_text())
    assert report["chosen"] is None and [p["values"] for p in report["points"]] == [{"LORA_DIM": "1"},
                                                                                    {"LORA_DIM": "2"}]
    assert (tmp_path / "run" / "sweep" / "results.png").read_bytes()[:4] == b"\x89PNG"
    # a rerun reuses every point; the docs' `nlg compare` of two points runs
    again = run()
    assert again.returncode == 0 and re.findall(r"^== (\w+)", again.stderr, re.MULTILINE) == ["sweep", "sweep",
                                                                                             "results"]
    points_dir = tmp_path / "run" / "sweep"
    compare = subprocess.run([sys.executable, "-m", "nlg", "compare", str(points_dir / "lora_dim-1" / "seed-110"),
                              str(points_dir / "lora_dim-2" / "seed-110"), "--resamples", "20"],
                             capture_output=True, text=True, cwd=REPO, timeout=600)
    assert compare.returncode == 0, compare.stderr[-2000:]
    assert "BLEU" in compare.stdout and "p" in compare.stdout
