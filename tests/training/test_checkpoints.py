"""nlg.training.checkpoints: which directories count as checkpoints, training_state.pt's round trip,
checkpoints verified on resume, a full disk while writing them, the work_dir lock, and --resume's
refusal of changed settings and inputs (--allow_changed).

Each command runs as a user would (`helpers.nlg`, or a subprocess where a process boundary
matters) on a copy of conftest's `lora_run`, and checks the exit code, the exact line on stderr,
and that every input and earlier output is byte-identical afterwards (`helpers.snapshot`).
Learning and exact resume through whole runs: tests/training/test_trainer.py.
"""

from __future__ import annotations

import errno
import io
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import (
    ENOSPC,
    REPO,
    RUN_CONFIG,
    damage,
    error_line,
    nlg,
    snapshot,
    train_argv,
    trainable_base,
)

from nlg.files import MANIFEST, read_jsonl
from nlg.training.checkpoints import (
    STATE_FILE,
    TrainingState,
    checkpoint_dir,
    latest_checkpoint,
    list_checkpoints,
    load_training_state,
    torch_save,
    verify_checkpoint,
)
from nlg.training.log import LossWindow

pytestmark = pytest.mark.usefixtures("single_thread")


def test_only_complete_checkpoints_count_in_step_order(tmp_path):
    assert list_checkpoints(tmp_path / "missing") == [] and latest_checkpoint(tmp_path) is None
    for step in (9, 10, 100):
        checkpoint_dir(tmp_path, step).mkdir()
        (checkpoint_dir(tmp_path, step) / STATE_FILE).touch()
    checkpoint_dir(tmp_path, 200).mkdir()  # no training state: not a checkpoint
    (tmp_path / ".checkpoint-300.tmp").mkdir()  # atomic_dir's unfinished one
    (tmp_path / "checkpoint-x").mkdir()
    assert list_checkpoints(tmp_path) == [(step, tmp_path / f"checkpoint-{step}") for step in (9, 10, 100)]
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-100"


def test_training_state_round_trips_through_a_weights_only_load(tmp_path):
    window = LossWindow(loss_sum=12.5, n_loss=7, n_tokens=40, seconds=0.25)
    state = TrainingState(step=3, epoch=1, batch_in_epoch=2, optimizer={"state": {}, "param_groups": []},
                          scheduler={"last_epoch": 3}, rng=[{"torch": torch.get_rng_state()}],
                          log_window=window, config={"seq_len": 96}, world_size=1, n_train=36)
    checkpoint = checkpoint_dir(tmp_path, 3)
    checkpoint.mkdir()
    torch.save(state.to_file(), checkpoint / STATE_FILE)
    loaded = load_training_state(checkpoint)
    assert loaded.log_window == window
    assert (loaded.step, loaded.epoch, loaded.batch_in_epoch, loaded.n_train) == (3, 1, 2, 36)
    assert torch.equal(loaded.rng[0]["torch"], state.rng[0]["torch"])


# ---------------------------------------------------------------------------------------------
# Checkpoints verified against their manifest when resuming
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def work(lora_run, tmp_path) -> Path:
    """A copy of the run's work_dir (checkpoint-1..3) to damage."""
    return Path(shutil.copytree(lora_run["work"], tmp_path / "work"))


def same_tensors(a: Path, b: Path) -> bool:
    """Two safetensors files hold equal tensors (their headers' metadata order may differ)."""
    from safetensors.torch import load_file

    first, second = load_file(str(a)), load_file(str(b))
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.parametrize("how, problem", [
    ("truncate", "{bad}: {half} bytes, manifest.json says {size} (cut short or changed)"),
    ("flip", "{bad}: contents differ from manifest.json (SHA-256 mismatch: corrupt or changed)"),
])
def test_resume_latest_skips_a_damaged_checkpoint_with_a_warning(lora_run, work, capsys, how, problem):
    bad = work / "checkpoint-3" / "adapter_model.safetensors"
    size = bad.stat().st_size
    damage(bad, how)
    kept = snapshot(work / "checkpoint-2"), snapshot(work / "checkpoint-1")
    assert nlg(*train_argv(lora_run, work, "--max_step", 3, "--resume", "latest")) == 0
    out, err = capsys.readouterr()
    reason = problem.format(bad=bad, half=size // 2, size=size)
    assert err.splitlines()[0] == f"warning: skipping checkpoint {work / 'checkpoint-3'}: {reason}"
    assert f"resumed from {work / 'checkpoint-2'} at step 2" in out
    assert (snapshot(work / "checkpoint-2"), snapshot(work / "checkpoint-1")) == kept
    verify_checkpoint(work / "checkpoint-3")  # written again, whole, and the adapter as the first time
    assert same_tensors(bad, lora_run["work"] / "checkpoint-3" / "adapter_model.safetensors")


def test_an_explicit_damaged_checkpoint_is_an_error(lora_run, work, capsys):
    damage(work / "checkpoint-2" / "training_state.pt", "truncate")
    before = snapshot(work)
    assert nlg(*train_argv(lora_run, work, "--max_step", 3, "--resume", work / "checkpoint-2")) == 2
    state = work / "checkpoint-2" / "training_state.pt"
    assert error_line(capsys) == (f"nlg train: error: --resume {work / 'checkpoint-2'}: damaged checkpoint: "
                                  f"{state}: {state.stat().st_size} bytes, manifest.json says "
                                  f"{(lora_run['work'] / 'checkpoint-2' / 'training_state.pt').stat().st_size} "
                                  "(cut short or changed)\n")
    assert snapshot(work) == before


def test_checkpoints_without_a_manifest_still_load_and_are_checked_by_reading(lora_run, work, capsys):
    """Checkpoints written before manifests: verified by reading every tensor and the state."""
    for manifest in work.glob(f"checkpoint-*/{MANIFEST}"):
        manifest.unlink()
    verify_checkpoint(work / "checkpoint-3")
    bad = work / "checkpoint-3" / "adapter_model.safetensors"
    damage(bad, "truncate")
    assert nlg(*train_argv(lora_run, work, "--max_step", 3, "--resume", "latest")) == 0
    out, err = capsys.readouterr()
    assert err.splitlines()[0].startswith(f"warning: skipping checkpoint {work / 'checkpoint-3'}: {bad}: "
                                          "not a readable safetensors file (")
    assert f"resumed from {work / 'checkpoint-2'} at step 2" in out


def test_no_checkpoint_that_verifies_is_an_error(lora_run, work, capsys):
    for step in (1, 2, 3):
        damage(work / f"checkpoint-{step}" / "training_state.pt", "flip")
    before = snapshot(work)
    assert nlg(*train_argv(lora_run, work, "--max_step", 3, "--resume", "latest")) == 2
    err = capsys.readouterr().err.splitlines()
    assert [line.split(":")[0] for line in err[:3]] == ["warning"] * 3
    assert err[3:] == [f"nlg train: error: {work}: none of its 3 checkpoints verifies (see the warnings); "
                       "nothing to resume from"]
    assert snapshot(work) == before


# ---------------------------------------------------------------------------------------------
# A full disk while writing checkpoints: one line, earlier checkpoints whole
# ---------------------------------------------------------------------------------------------


def test_full_disk_in_train_keeps_earlier_checkpoints(lora_run, tmp_path, capsys, full_disk):
    work = tmp_path / "work"
    full_disk["where"] = ".checkpoint-2."  # the first two files fit, the second checkpoint does not
    assert nlg(*train_argv(lora_run, work, "--max_step", 3)) == 1
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"nlg train: error: {work / 'checkpoint-2' / 'adapter_model.safetensors'}: No space left on device")
    assert sorted(p.name for p in work.iterdir()) == ["checkpoint-1", "metrics.jsonl", "train.lock", "train_config.json"]
    verify_checkpoint(work / "checkpoint-1")
    assert same_tensors(*(w / "checkpoint-1" / "adapter_model.safetensors" for w in (work, lora_run["work"])))
    assert [record["step"] for _, record in read_jsonl(work / "metrics.jsonl")] == [1, 2]


class _FullAfter(io.BytesIO):
    def __init__(self, room: int):
        super().__init__()
        self.room = room

    def write(self, data) -> int:
        if self.tell() + len(data) > self.room:
            raise ENOSPC
        return super().write(data)


def test_torch_save_reports_the_os_error_not_torchs():
    with pytest.raises(OSError) as raised:  # torch itself says RuntimeError("... unexpected pos ...")
        torch_save({"weights": torch.zeros(10_000)}, _FullAfter(1000))
    assert raised.value.errno == errno.ENOSPC


def _mount_tmpfs(path: Path, size: int) -> bool:
    path.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return done.returncode == 0


def test_a_real_full_disk_while_training(lora_run, tmp_path):
    """The kernel's own error, in a subprocess: a small tmpfs where mounting is allowed (no
    space left), else a file-size limit (RLIMIT_FSIZE: file too large). The run resumes from
    checkpoint-3 and cannot write checkpoint-4: one line, exit 1, checkpoints 1-3 untouched."""
    checkpoint = lora_run["work"] / "checkpoint-3"
    sizes = sorted(p.stat().st_size for p in checkpoint.iterdir())
    disk = tmp_path / "disk"
    mounted = _mount_tmpfs(disk, 4 << 20)
    try:
        work = Path(shutil.copytree(lora_run["work"], disk / "work"))
        before = snapshot(work)
        limit = None
        if mounted:  # leave less room than one checkpoint needs
            free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
            (disk / "filler").write_bytes(b"\0" * (free - sum(sizes) // 2))
        else:  # the adapter and the state are larger than the limit, the log and the configs are not
            limit = min((checkpoint / name).stat().st_size
                        for name in ("adapter_model.safetensors", "training_state.pt")) - 1
            assert limit > max((work / name).stat().st_size for name in ("metrics.jsonl", "train_config.json"))
        argv = [str(a) for a in train_argv(lora_run, work, "--max_step", 5, "--resume", "latest",
                                           "--allow_changed", "max_step")[1:]]
        done = subprocess.run(
            [sys.executable, "-m", "nlg.train", *argv], capture_output=True, text=True,
            env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
            preexec_fn=None if limit is None else lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
        reason = "No space left on device" if mounted else "File too large"
        last = done.stderr.splitlines()[-1]
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert last.startswith(f"nlg train: error: {work / 'checkpoint-4'}/") and last.endswith(f": {reason}")
        after = snapshot(work)
        assert {k: v for k, v in after.items() if k.startswith("checkpoint-")} == {
            k: v for k, v in before.items() if k.startswith("checkpoint-")}
        assert not [p for p in work.iterdir() if p.name.startswith(".")]  # no temporary leftovers
        read_jsonl(work / "metrics.jsonl")  # every line whole
    finally:
        if mounted:
            subprocess.run(["umount", str(disk)], check=True)


# ---------------------------------------------------------------------------------------------
# The work_dir lock: a second run on a work_dir in use stops at once
# ---------------------------------------------------------------------------------------------


def test_a_second_run_on_a_work_dir_in_use_stops_at_once(lora_run, tmp_path, capsys):
    work = tmp_path / "work"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    argv = [str(a) for a in train_argv(lora_run, work, "--max_step", 100_000, "--save_interval", 100_000,
                                        "--log_interval", 100_000)[1:]]
    first = subprocess.Popen([sys.executable, "-m", "nlg.train", *argv], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        lock = work / "train.lock"
        deadline = time.monotonic() + 120
        while not (lock.is_file() and lock.read_text().startswith(f"{first.pid} ")):
            assert first.poll() is None and time.monotonic() < deadline, "the first run did not start"
            time.sleep(0.1)
        holder = f"process {first.pid} on {socket.gethostname()}"
        in_use = (f"--work_dir {work}: in use by another `nlg train` ({holder}, holding {lock}); "
                  "wait for it to end, or choose another --work_dir")
        # the same command, as a second process; then as two torchrun ranks
        assert nlg("train", *argv) == 2
        assert error_line(capsys) == f"nlg train: error: {in_use}\n"
        started = time.monotonic()
        ranks = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                                "--standalone", "-m", "nlg.train", *argv],
                               env=env, capture_output=True, text=True, timeout=120)
        assert ranks.returncode != 0
        assert f"nlg train (rank 0/2): error: {in_use}\n" in ranks.stderr
        # rank 1, waiting for rank 0 to join, ends at torchrun's SIGTERM (nlg.training.distributed),
        # not at the SIGKILL that follows 30 s later
        assert "forcefully exiting via 9" not in ranks.stderr and time.monotonic() - started < 30
        assert first.poll() is None  # the first run goes on
        first.kill()  # kill -9: the kernel releases the lock with the process
        first.wait()
        capsys.readouterr()
        assert nlg("train", *argv, "--max_step", 1) == 0  # the last --max_step counts
        assert (work / "checkpoint-1" / MANIFEST).is_file()
    finally:
        if first.poll() is None:
            first.kill()
        first.communicate()


# ---------------------------------------------------------------------------------------------
# --resume refuses changed settings, base model or data, unless --allow_changed names them;
# then the new value takes effect and is logged
# ---------------------------------------------------------------------------------------------


def identity(path: Path) -> str:
    import hashlib

    return f"{path} ({path.stat().st_size:,} bytes, sha256 {hashlib.sha256(path.read_bytes()).hexdigest()[:12]})"


def other_data(lora_run: dict[str, Path], path: Path) -> Path:
    """The run's training file with its first two pairs swapped: as many pairs, as many bytes."""
    lines = lora_run["data"].read_text().splitlines(keepends=True)
    path.write_text("".join([lines[1], lines[0], *lines[2:]]))
    assert path.stat().st_size == lora_run["data"].stat().st_size
    return path


def replaced(argv: list[object], old: object, new: object) -> list[object]:
    return [new if a == old else a for a in argv]


@pytest.mark.parametrize("change, message", [
    (["--lr", 0.5], "--lr: checkpoint 0.0002, now 0.5 (to continue with the new values, add --allow_changed lr)"),
    (["--lora_dropout", 0.1], "--lora_dropout: checkpoint 0.0, now 0.1 (to continue with the new values, add "
                              "--allow_changed lora_dropout)"),
    (["--lr", 0.5, "--max_step", 5], "--lr: checkpoint 0.0002, now 0.5; --max_step: checkpoint 3, now 5 (to "
                                     "continue with the new values, add --allow_changed lr,max_step)"),
    (["--seq_len", 31, "--allow_changed", "lr"], "--seq_len: checkpoint 32, now 31"),
    ("train_data", "--train_data: checkpoint {old}, now {new} (to continue with the new values, add "
                   "--allow_changed train_data)"),
    ("init_checkpoint", "--init_checkpoint: checkpoint {old}, now {new} (to continue with the new values, add "
                        "--allow_changed init_checkpoint)"),
])
def test_resume_refuses_a_changed_setting_or_input_by_name(lora_run, work, tmp_path, capsys, change, message):
    argv = train_argv(lora_run, work, "--max_step", 3, "--resume", "latest")
    if change == "train_data":
        old, new = lora_run["data"], other_data(lora_run, tmp_path / "other.jsonl")
        argv = replaced(argv, old, new)
    elif change == "init_checkpoint":
        other = trainable_base(tmp_path / "base", RUN_CONFIG, seed=1)  # the same shape, other weights
        old, new = lora_run["base"] / "model.safetensors", other / "model.safetensors"
        argv = replaced(argv, lora_run["base"], other)
    else:
        argv += change
    shutil.rmtree(work / "checkpoint-3")
    before = snapshot(work)
    assert nlg(*argv) == 2
    if isinstance(change, str):
        message = message.format(old=identity(old), new=identity(new))
    assert error_line(capsys) == (f"nlg train: error: {work / 'checkpoint-2'}: cannot resume exactly, settings "
                                  f"differ: {message}\n")
    assert snapshot(work) == before  # nothing written: train_config.json still says what ran


def test_a_moved_copy_of_the_same_inputs_resumes(lora_run, work, tmp_path):
    data = Path(shutil.copy(lora_run["data"], tmp_path / "moved.jsonl"))
    base = Path(shutil.copytree(lora_run["base"], tmp_path / "base"))
    argv = replaced(replaced(train_argv(lora_run, work, "--max_step", 3, "--resume", work / "checkpoint-2"),
                             lora_run["data"], data), lora_run["base"], base)
    assert nlg(*argv, "--log_interval", 3, "--save_interval", 3, "--compile", "static") == 0


@pytest.mark.parametrize("change, lr", [
    (["--lr", 0.3], 0.3 * (3 - 2) / 3),  # the new peak lr on the same linear decay to step 3
    (["--max_step", 5], 2e-4 * (5 - 2) / 5),  # the schedule the new length gives, at step 2
])
def test_allow_changed_takes_effect_and_is_logged(lora_run, work, capsys, change, lr):
    name = change[0][2:]
    shutil.rmtree(work / "checkpoint-3")
    argv = train_argv(lora_run, work, "--max_step", 3, "--resume", "latest", *change, "--allow_changed", name)
    assert nlg(*argv) == 0
    old = {"lr": 2e-4, "max_step": 3}[name]
    out = capsys.readouterr().out
    assert f"changed on resume (--allow_changed): --{name}: checkpoint {old!r}, now {change[1]!r}\n" in out
    records = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    change_record = {"step": 2, "resumed_from": str(work / "checkpoint-2"),
                     "changed": {name: {"checkpoint": old, "now": change[1]}}}
    assert records[2] == change_record
    assert records[3]["step"] == 3 and records[3]["lr"] == pytest.approx(lr, rel=1e-12)
    config = json.loads((work / "train_config.json").read_text())
    assert config[name] == change[1] and config["resumed_from"] == change_record
    state = torch.load(work / "checkpoint-3" / "training_state.pt", weights_only=True)
    assert state["config"][name] == change[1]  # the next resume compares with what ran last


def test_every_checkpoint_records_its_inputs(lora_run):
    import hashlib

    def entry(path: Path, name: str) -> dict:
        return {"path": str(path), "file": name, "bytes": path.stat().st_size,
                "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}

    state = torch.load(lora_run["work"] / "checkpoint-3" / "training_state.pt", weights_only=True)
    model_files = [p for p in sorted(lora_run["base"].iterdir()) if p.name != "generation_config.json"]
    assert state["inputs"] == {"train_data": [entry(lora_run["data"], "")], "valid_data": None,
                               "init_checkpoint": sorted((entry(p, p.name) for p in model_files),
                                                         key=lambda e: e["file"])}
    config = json.loads((lora_run["work"] / "train_config.json").read_text())
    assert config["inputs"] == state["inputs"] and config["resumed_from"] is None


def test_a_checkpoint_without_recorded_inputs_resumes_with_a_warning(lora_run, work, capsys):
    from nlg.files import write_manifest
    from nlg.training.checkpoints import torch_save

    checkpoint = work / "checkpoint-3"
    state = torch.load(checkpoint / "training_state.pt", weights_only=True)
    del state["inputs"]
    with (checkpoint / "training_state.pt").open("wb") as handle:
        torch_save(state, handle)
    write_manifest(checkpoint)
    assert nlg(*train_argv(lora_run, work, "--max_step", 3, "--resume", "latest")) == 0
    assert capsys.readouterr().err == (
        f"warning: {checkpoint} records no identity of its inputs (written before nlg recorded them): its settings "
        "match, but whether --train_data, --valid_data and --init_checkpoint are the files it was trained on "
        "cannot be checked\n")


@pytest.mark.parametrize("allowed, message", [
    ("lora_dim", "--allow_changed lora_dim: cannot change on --resume (the checkpoint's data order, its position "
                 "in the epoch or its weights' shape depend on it)"),
    ("learning_rate", "--allow_changed learning_rate: not a setting of nlg train"),
])
def test_allow_changed_refuses_what_cannot_change(lora_run, tmp_path, capsys, allowed, message):
    assert nlg(*train_argv(lora_run, tmp_path / "w", "--allow_changed", allowed)) == 2
    assert error_line(capsys) == f"nlg train: error: {message}\n"


def test_allow_changed_takes_another_training_file_and_records_it(lora_run, work, tmp_path, capsys):
    shutil.rmtree(work / "checkpoint-3")
    data = other_data(lora_run, tmp_path / "other.jsonl")
    argv = replaced(train_argv(lora_run, work, "--max_step", 3, "--resume", "latest", "--allow_changed", "train_data"),
                    lora_run["data"], data)
    assert nlg(*argv) == 0
    assert (f"changed on resume (--allow_changed): --train_data: checkpoint {identity(lora_run['data'])}, now "
            f"{identity(data)}\n") in capsys.readouterr().out
    state = torch.load(work / "checkpoint-3" / "training_state.pt", weights_only=True)
    assert state["inputs"]["train_data"][0]["path"] == str(data)
    record = json.loads((work / "train_config.json").read_text())["resumed_from"]
    assert record["changed"]["train_data"]["now"] == state["inputs"]["train_data"]


def test_a_shorter_run_than_the_checkpoint_is_refused(lora_run, work, capsys):
    before = snapshot(work)
    assert nlg(*train_argv(lora_run, work, "--max_step", 2, "--resume", "latest", "--allow_changed", "max_step")) == 2
    assert error_line(capsys) == (f"nlg train: error: {work / 'checkpoint-3'}: the checkpoint is at step 3, past "
                                  "the 2 steps this run's --max_step/--max_epoch plan\n")
    assert snapshot(work) == before


def test_resume_checks_the_adapter_scale_too(lora_run, work, capsys):
    from nlg.files import write_manifest

    checkpoint = work / "checkpoint-3"
    config = checkpoint / "adapter_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "lora_alpha": 1e308}))
    write_manifest(checkpoint)  # as if written so: the manifest agrees, the scale does not
    before = snapshot(work)
    assert nlg(*train_argv(lora_run, work, "--max_step", 3, "--resume", checkpoint)) == 2
    assert error_line(capsys) == (f"nlg train: error: {config}: lora_alpha/r is 1e+308/8 = 1.25e+307: the "
                                  "scale must be a positive number float32 can hold (at most 3.4e+38)\n")
    assert snapshot(work) == before
