"""Failure behaviour: nothing lost, nothing silent (issue 16, one test group per numbered case).

1. an output that is (or resolves to) an input, or another output, is refused before any work;
2. checkpoints verify against their manifest: `--resume latest` skips a damaged one with a
   warning, an explicit damaged one and a damaged or inconsistent adapter are one-line errors;
3. operating-system and numeric failures (a full disk, a folder where a file goes, NaN
   hyperparameters) are one line `nlg STAGE: error: FILE: reason`, exit 1 (2 for bad input),
   and leave no partial output;
4. a UTF-8 byte-order mark is removed with a note, so scores and data do not change;
5. two `nlg train` runs on one work_dir: the second stops at once, naming the first's process.

Each case runs the command as a user would (`nlg.cli.main`, or a subprocess where a process
boundary matters) and checks the exit code, the exact line on stderr, and that every input and
earlier output is byte-identical afterwards (`snapshot`).
"""

from __future__ import annotations

import errno
import io
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import tiny_config, trainable_base

from nlg import cli
from nlg.files import MANIFEST, InputError, read_jsonl, read_text
from nlg.training.checkpoints import torch_save, verify_checkpoint

REPO = Path(__file__).resolve().parents[1]
ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
CONFIG = tiny_config(vocab_size=300)
EOS = 299


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def nlg(*argv: object) -> int:
    """`nlg ARGV` in this process: its exit code (argparse's exits included)."""
    try:
        return cli.main([str(a) for a in argv])
    except SystemExit as done:
        return int(done.code or 0)


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root, by relative path: equal snapshots mean nothing was touched."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def write_encoded(path: Path, n: int = 24) -> Path:
    generator = torch.Generator().manual_seed(0)
    lines = []
    for _ in range(n):
        context = torch.randint(0, EOS, (6,), generator=generator).tolist() + [EOS]
        completion = torch.randint(0, EOS, (5,), generator=generator).tolist() + [EOS]
        lines.append(json.dumps({"context": context, "completion": completion}) + "\n")
    path.write_text("".join(lines))
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict[str, Path]:
    """A finished 3-step LoRA run with a checkpoint per step, on a tiny random base."""
    root = tmp_path_factory.mktemp("run")
    paths = {"base": trainable_base(root / "base", CONFIG, seed=0), "data": write_encoded(root / "train.jsonl"),
             "work": root / "work"}
    assert nlg(*train_argv(paths, paths["work"], "--max_step", 3)) == 0
    return paths


def train_argv(run: dict[str, Path], work: Path, *extra: object) -> list[object]:
    return ["train", "--train_data", run["data"], "--init_checkpoint", run["base"], "--work_dir", work,
            "--train_batch_size", 4, "--seq_len", 32, "--warmup_step", 0, "--lora_dropout", 0,
            "--log_interval", 1, "--save_interval", 1, "--device", "cpu", *extra]


@pytest.fixture
def work(run, tmp_path) -> Path:
    """A copy of the run's work_dir (checkpoint-1..3) to damage."""
    return Path(shutil.copytree(run["work"], tmp_path / "work"))


def error_line(capsys) -> str:
    """stderr, asserted to be exactly one line."""
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    return err


# ---------------------------------------------------------------------------------------------
# 1. Outputs never over inputs
# ---------------------------------------------------------------------------------------------


def case_files(tmp: Path, run: dict[str, Path]) -> dict[str, Path]:
    """Inputs of every command (their contents do not matter: the check comes first)."""
    files = {"data": write_encoded(tmp / "x.jsonl", 4), "formatted": tmp / "formatted.jsonl",
             "predict": tmp / "predict.jsonl", "r": tmp / "r.txt", "h": tmp / "h.txt",
             "refs": tmp / "refs", "adapter": Path(shutil.copytree(run["work"] / "checkpoint-3", tmp / "ckpt")),
             "work": Path(shutil.copytree(run["work"], tmp / "work"))}
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
def test_an_output_over_an_input_is_refused_before_any_work(run, tmp_path, capsys, argv, message):
    files = {name: str(path) for name, path in case_files(tmp_path, run).items()}
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


def test_python_dash_m_and_torchrun_ranks_say_the_same(tmp_path):
    """`python -m nlg.STAGE`, as torchrun starts each rank, prints the same line, naming the rank
    (nlg.score: the entry point is the same for every stage, and this one starts without torch)."""
    ref, pred = tmp_path / "r.txt", tmp_path / "h.txt"
    ref.write_text("a\n\n")
    pred.write_text("a\n")
    before = snapshot(tmp_path)
    env = {**os.environ, "RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "nlg.score", str(ref), str(pred), "--json", str(ref)],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 2
    assert done.stderr == (f"nlg score (rank 1/2): error: --json {ref}: is the input REF {ref}; "
                           "refusing to write over it\n")
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------------------------------------
# 2. Checkpoints verified
# ---------------------------------------------------------------------------------------------


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if how == "truncate" else data[:-1] + bytes([data[-1] ^ 1]))


@pytest.mark.parametrize("how, problem", [
    ("truncate", "{bad}: {half} bytes, manifest.json says {size} (cut short or changed)"),
    ("flip", "{bad}: contents differ from manifest.json (SHA-256 mismatch: corrupt or changed)"),
])
def test_resume_latest_skips_a_damaged_checkpoint_with_a_warning(run, work, capsys, how, problem):
    bad = work / "checkpoint-3" / "adapter_model.safetensors"
    size = bad.stat().st_size
    damage(bad, how)
    kept = snapshot(work / "checkpoint-2"), snapshot(work / "checkpoint-1")
    assert nlg(*train_argv(run, work, "--max_step", 3, "--resume", "latest")) == 0
    out, err = capsys.readouterr()
    reason = problem.format(bad=bad, half=size // 2, size=size)
    assert err.splitlines()[0] == f"warning: skipping checkpoint {work / 'checkpoint-3'}: {reason}"
    assert f"resumed from {work / 'checkpoint-2'} at step 2" in out
    assert (snapshot(work / "checkpoint-2"), snapshot(work / "checkpoint-1")) == kept
    verify_checkpoint(work / "checkpoint-3")  # written again, whole, and the adapter as the first time
    assert same_tensors(bad, run["work"] / "checkpoint-3" / "adapter_model.safetensors")


def same_tensors(a: Path, b: Path) -> bool:
    """Two safetensors files hold equal tensors (their headers' metadata order may differ)."""
    from safetensors.torch import load_file

    first, second = load_file(str(a)), load_file(str(b))
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_an_explicit_damaged_checkpoint_is_an_error(run, work, capsys):
    damage(work / "checkpoint-2" / "training_state.pt", "truncate")
    before = snapshot(work)
    assert nlg(*train_argv(run, work, "--max_step", 3, "--resume", work / "checkpoint-2")) == 2
    state = work / "checkpoint-2" / "training_state.pt"
    assert error_line(capsys) == (f"nlg train: error: --resume {work / 'checkpoint-2'}: damaged checkpoint: "
                                  f"{state}: {state.stat().st_size} bytes, manifest.json says "
                                  f"{(run['work'] / 'checkpoint-2' / 'training_state.pt').stat().st_size} "
                                  "(cut short or changed)\n")
    assert snapshot(work) == before


def test_checkpoints_without_a_manifest_still_load_and_are_checked_by_reading(run, work, capsys):
    """Checkpoints written before manifests: verified by reading every tensor and the state."""
    for manifest in work.glob(f"checkpoint-*/{MANIFEST}"):
        manifest.unlink()
    verify_checkpoint(work / "checkpoint-3")
    bad = work / "checkpoint-3" / "adapter_model.safetensors"
    damage(bad, "truncate")
    assert nlg(*train_argv(run, work, "--max_step", 3, "--resume", "latest")) == 0
    out, err = capsys.readouterr()
    assert err.splitlines()[0].startswith(f"warning: skipping checkpoint {work / 'checkpoint-3'}: {bad}: "
                                          "not a readable safetensors file (")
    assert f"resumed from {work / 'checkpoint-2'} at step 2" in out


def test_no_checkpoint_that_verifies_is_an_error(run, work, capsys):
    for step in (1, 2, 3):
        damage(work / f"checkpoint-{step}" / "training_state.pt", "flip")
    before = snapshot(work)
    assert nlg(*train_argv(run, work, "--max_step", 3, "--resume", "latest")) == 2
    err = capsys.readouterr().err.splitlines()
    assert [line.split(":")[0] for line in err[:3]] == ["warning"] * 3
    assert err[3:] == [f"nlg train: error: {work}: none of its 3 checkpoints verifies (see the warnings); "
                       "nothing to resume from"]
    assert snapshot(work) == before


@pytest.mark.parametrize("command", ["beam", "analyze"])
def test_reading_a_damaged_adapter_names_the_file(run, tmp_path, capsys, command):
    adapter = Path(shutil.copytree(run["work"] / "checkpoint-3", tmp_path / "adapter"))
    (adapter / MANIFEST).unlink()  # without it the damage is found by safetensors itself
    weights = adapter / "adapter_model.safetensors"
    damage(weights, "truncate")
    data = write_encoded(tmp_path / "x.jsonl", 2)
    before = snapshot(tmp_path)
    argv = (["beam", "--data", data, "--init_checkpoint", run["base"], "--lora_checkpoint", adapter,
             "--output_file", tmp_path / "out.jsonl", "--eos_token_id", EOS] if command == "beam"
            else ["analyze", adapter])
    assert nlg(*argv) == 2
    assert error_line(capsys).startswith(f"nlg {command}: error: {weights}: not a readable safetensors file (")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("key, value, message", [
    ("r", 4, "r is 4, but {weights} holds rank 8 (transformer.h.0.attn.c_attn.lora_A.weight has 8 rows)"),
    ("lora_alpha", 16.0, "lora_alpha is 16.0, but {weights} was written with lora_alpha 64.0 "
                         "(its metadata: rank 4, alpha 32.0, targets q,v)"),
    ("target_modules", ["c_fc"], "target_modules is ['c_fc'], but {weights} adapts transformer.h.0.attn.c_attn, "
                                 "which it does not select"),
])
@pytest.mark.parametrize("command", ["beam", "analyze"])
def test_an_adapter_config_that_disagrees_with_its_tensors_is_an_error(run, tmp_path, capsys, command, key,
                                                                       value, message):
    adapter = Path(shutil.copytree(run["work"] / "checkpoint-3", tmp_path / "adapter"))
    config = adapter / "adapter_config.json"
    changed = {**json.loads(config.read_text()), key: value}
    config.write_text(json.dumps(changed))
    with pytest.raises(InputError, match=f"{config}: .*manifest.json"):  # the manifest notices first
        verify_checkpoint(adapter)
    (adapter / MANIFEST).unlink()  # and without it, the tensors do
    data = write_encoded(tmp_path / "x.jsonl", 2)
    argv = (["beam", "--data", data, "--init_checkpoint", run["base"], "--lora_checkpoint", adapter,
             "--output_file", tmp_path / "out.jsonl", "--eos_token_id", EOS] if command == "beam"
            else ["analyze", adapter])
    assert nlg(*argv) == 2
    weights = adapter / "adapter_model.safetensors"
    assert error_line(capsys) == f"nlg {command}: error: {config}: {message.format(weights=weights)}\n"
    assert not (tmp_path / "out.jsonl").exists()


# ---------------------------------------------------------------------------------------------
# 3. Operating-system and numeric failures: one line, no partial output
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


@pytest.fixture
def full_disk(monkeypatch):
    """Every fsync (each atomic write makes one before its rename) fails as on a full disk; for
    a path containing `where` only, when set."""
    real_fsync, state = os.fsync, {"where": None}

    def fsync(fd: int) -> None:
        if state["where"] is None or state["where"] in os.readlink(f"/proc/self/fd/{fd}"):
            raise ENOSPC
        real_fsync(fd)

    monkeypatch.setattr("nlg.files.os.fsync", fsync)
    return state


def test_full_disk_in_beam(tmp_path, capsys, full_disk):
    data = write_encoded(tmp_path / "x.jsonl", 3)
    before = snapshot(tmp_path)
    out = tmp_path / "predict.jsonl"
    assert nlg("beam", "--data", data, "--model_card", "gpt2.tiny", "--output_file", out, "--beam", 2,
               "--eval_len", 3, "--no_progress", "--eos_token_id", EOS) == 1
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


def test_full_disk_in_train_keeps_earlier_checkpoints(run, tmp_path, capsys, full_disk):
    work = tmp_path / "work"
    full_disk["where"] = ".checkpoint-2."  # the first two files fit, the second checkpoint does not
    assert nlg(*train_argv(run, work, "--max_step", 3)) == 1
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"nlg train: error: {work / 'checkpoint-2' / 'adapter_model.safetensors'}: No space left on device")
    assert sorted(p.name for p in work.iterdir()) == ["checkpoint-1", "metrics.jsonl", "train.lock", "train_config.json"]
    verify_checkpoint(work / "checkpoint-1")
    assert same_tensors(*(w / "checkpoint-1" / "adapter_model.safetensors" for w in (work, run["work"])))
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


def test_a_real_full_disk_while_training(run, tmp_path):
    """The kernel's own error, in a subprocess: a small tmpfs where mounting is allowed (no
    space left), else a file-size limit (RLIMIT_FSIZE: file too large). The run resumes from
    checkpoint-3 and cannot write checkpoint-4: one line, exit 1, checkpoints 1-3 untouched."""
    checkpoint = run["work"] / "checkpoint-3"
    sizes = sorted(p.stat().st_size for p in checkpoint.iterdir())
    disk = tmp_path / "disk"
    mounted = _mount_tmpfs(disk, 4 << 20)
    try:
        work = Path(shutil.copytree(run["work"], disk / "work"))
        before = snapshot(work)
        limit = None
        if mounted:  # leave less room than one checkpoint needs
            free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
            (disk / "filler").write_bytes(b"\0" * (free - sum(sizes) // 2))
        else:  # the adapter and the state are larger than the limit, the log and the configs are not
            limit = min((checkpoint / name).stat().st_size
                        for name in ("adapter_model.safetensors", "training_state.pt")) - 1
            assert limit > max((work / name).stat().st_size for name in ("metrics.jsonl", "train_config.json"))
        argv = [str(a) for a in train_argv(run, work, "--max_step", 5, "--resume", "latest",
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
# 4. Byte-order marks
# ---------------------------------------------------------------------------------------------

BOM = b"\xef\xbb\xbf"


def test_a_bom_does_not_change_scores(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no Java: BLEU and NIST, which the BOM shifted
    refs = b"The Vaults is a pub near Cafe Adriatic.\nThe Vaults pub is near Cafe Adriatic.\n\nA cafe.\n\n"
    preds = b"The Vaults is a pub near the Cafe Adriatic.\nA coffee shop.\n"
    scores = {}
    for name, mark in (("plain", b""), ("bom", BOM)):
        (tmp_path / f"{name}_r.txt").write_bytes(mark + refs)
        (tmp_path / f"{name}_h.txt").write_bytes(mark + preds)
        assert nlg("score", tmp_path / f"{name}_r.txt", tmp_path / f"{name}_h.txt", "--json", tmp_path / f"{name}.json") == 0
        scores[name] = json.loads((tmp_path / f"{name}.json").read_text())
    assert scores["bom"] == scores["plain"] and scores["plain"]["BLEU"] > 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "byte-order mark" in line]
    assert notes == [f"note: {tmp_path / f'bom_{x}.txt'}: removed the UTF-8 byte-order mark at its start" for x in "rh"]


def test_a_bom_does_not_change_webnlg_scores(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    scores = {}
    for name, mark in (("plain", b""), ("bom", BOM)):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "reference0").write_bytes(mark + b"the cat sat on the mat\nhello world\n")
        (folder / "hypothesis").write_bytes(mark + b"the cat sat on a mat\nhello world\n")
        assert nlg("score", folder, folder / "hypothesis", "-m", "bleu,chrf++,ter", "--json", folder / "s.json") == 0
        scores[name] = json.loads((folder / "s.json").read_text())
    assert scores["bom"] == scores["plain"]


def test_a_bom_is_not_part_of_the_first_meaning_representation(tmp_path, capsys, vocab_dir, e2e_raw_dir):
    lines = (e2e_raw_dir / "valid.txt").read_bytes().splitlines(keepends=True)[:3]
    outputs = {}
    for name, mark in (("plain", b""), ("bom", BOM)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "test.txt").write_bytes(mark + b"".join(lines))
        assert nlg("data", "e2e", "--raw-dir", tmp_path / name, "--out-dir", tmp_path / f"{name}_out",
                   "--vocab", vocab_dir) == 0
        outputs[name] = snapshot(tmp_path / f"{name}_out")
    assert outputs["bom"] == outputs["plain"] and "\\ufeff" not in outputs["bom"]["test_formatted.jsonl"].decode()
    assert f"note: {tmp_path / 'bom' / 'test.txt'}: removed the UTF-8 byte-order mark" in capsys.readouterr().err


def test_a_bom_in_json_and_jsonl_inputs_is_removed(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(BOM + b'{"id": 1}\n')
    (tmp_path / "b.json").write_bytes(BOM + b'{"id": 2}')
    assert read_jsonl(tmp_path / "a.jsonl") == [(1, {"id": 1})]
    assert json.loads(read_text(tmp_path / "b.json")) == {"id": 2}
    from nlg.datasets.triples import load_json, read_file

    assert load_json(read_file(tmp_path / "b.json"), "b.json") == {"id": 2}


# ---------------------------------------------------------------------------------------------
# 5. Two runs on one work_dir
# ---------------------------------------------------------------------------------------------


def test_a_second_run_on_a_work_dir_in_use_stops_at_once(run, tmp_path, capsys):
    work = tmp_path / "work"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    argv = [str(a) for a in train_argv(run, work, "--max_step", 100_000, "--save_interval", 100_000,
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
        ranks = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                                "--standalone", "-m", "nlg.train", *argv],
                               env=env, capture_output=True, text=True, timeout=120)
        assert ranks.returncode != 0
        assert f"nlg train (rank 0/2): error: {in_use}\n" in ranks.stderr
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
# Issue 23, case 2: a gap in a reference folder is named, never skipped
# ---------------------------------------------------------------------------------------------


def test_a_gap_in_a_reference_folder_is_named_by_every_entry_point(tmp_path, capsys):
    from nlg.metrics import score_files

    refs = tmp_path / "refs"
    refs.mkdir()
    (refs / "reference0").write_text("the cat sat on the mat .\na dog runs .\n")
    (refs / "reference2").write_text("a cat is on the mat .\nthe dog runs fast .\n")
    hyp = tmp_path / "hypothesis"
    hyp.write_text("the cat is on the mat .\nthe dog runs .\n")
    before = snapshot(tmp_path)
    gap = f"{refs}: reference1 missing (need reference0 to reference2 without a gap; present: reference0, reference2)"
    # the folder, the prefix, and -nr 1 or 2, which the gap cuts short (reference0 alone was scored)
    for argv in ([refs], [refs / "reference"], [refs, "-nr", 1], [refs, "-nr", 2]):
        assert nlg("score", *argv[:1], hyp, *argv[1:], "-m", "bleu,ter", "--json", tmp_path / "s.json") == 2
        assert error_line(capsys) == f"nlg score: error: {gap}\n"
    with pytest.raises(InputError) as raised:
        score_files("webnlg", refs, hyp, metrics="bleu")
    assert str(raised.value) == gap
    # -nr larger than the files present is an error too, naming what is missing below it
    assert nlg("score", refs, hyp, "-nr", 4) == 2
    assert error_line(capsys) == (f"nlg score: error: {refs}: reference1, reference3 missing (-nr 4 needs reference0 "
                                  "to reference3 without a gap; present: reference0, reference2)\n")
    # GenerationEval's own arguments (its default -nr 4), as a user runs the script
    script = [sys.executable, str(REPO / "eval" / "generation_eval.py"), "-R", str(refs / "reference"), "-H", str(hyp)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([*script, "-nr", "3", "-m", "bleu"], capture_output=True, text=True, env=env)
    assert (done.returncode, done.stdout, done.stderr) == (
        2, "", f"generation_eval.py: error: {refs}: reference1 missing (-nr 3 needs reference0 to reference2 without "
               "a gap; present: reference0, reference2)\n")
    # the first file missing: the prefix alone is still read as GenerationEval's layout
    (refs / "reference0").rename(tmp_path / "aside")
    assert nlg("score", refs / "reference", hyp) == 2
    assert error_line(capsys) == (f"nlg score: error: {refs}: reference0, reference1 missing (need reference0 to "
                                  "reference2 without a gap; present: reference2)\n")
    (tmp_path / "aside").rename(refs / "reference0")
    assert snapshot(tmp_path) == before  # nothing written
    # the gap filled, every file counts
    (refs / "reference1").write_text("the cat is on the mat .\nthe dog runs .\n")
    assert nlg("score", refs, hyp, "-m", "bleu,ter", "--json", tmp_path / "s.json") == 0
    scores = json.loads((tmp_path / "s.json").read_text())
    assert {k: v for k, v in scores.items() if k != "scored"} == {"BLEU": 100.0, "TER": 0.0}


# ---------------------------------------------------------------------------------------------
# Issue 23, case 7: an indented XML file gives the data of the compact one
# ---------------------------------------------------------------------------------------------

WEBNLG_XML = (
    '<benchmark><entries>'
    '<entry category="Food" eid="Id1" size="2"><modifiedtripleset>'
    '<mtriple>Bacon_Explosion | country | United_States</mtriple>'
    '<mtriple>Bakewell_pudding | served | "Warm  or cold"</mtriple></modifiedtripleset>'
    '<lex comment="good" lid="Id1">Bacon Explosion comes from the United States.\tBakewell pudding is served '
    'warm or cold.</lex><lex comment="toFix" lid="Id2">Bacon.</lex></entry>'
    '<entry category="Artist" eid="Id2" size="1"><modifiedtripleset><mtriple>Ace_Wilder | genre | Hip_hop_music'
    '</mtriple></modifiedtripleset><lex comment="good" lid="Id1">Ace Wilder plays hip  hop music.</lex></entry>'
    '</entries></benchmark>'
)
DART_XML = (
    '<benchmark><entries><entry category="MISC" eid="Id1" size="2"><modifiedtripleset>'
    '<mtriple>Mars Hill College | JOINED | 1973</mtriple>'
    '<mtriple>piece of my heart  | DIRECTED_BY | mark tinker</mtriple></modifiedtripleset>'
    '<lex comment="WikiSQL_decl_sents" lid="Id1">A school from Mars Hill,\tNorth Carolina, joined in 1973.</lex>'
    '<lex comment="WikiTableQuestions_lily" lid="Id2">Mark Tinker directed  piece of my heart.</lex>'
    '</entry></entries></benchmark>'
)


def indented(compact: str) -> str:
    """The file as a pretty-printer or an editor lays it out: every element on its own lines,
    every text on a line of its own, and the longest text broken across two lines."""
    import xml.etree.ElementTree as ET

    root = ET.fromstring(compact)
    ET.indent(root, space="  ")
    leaves = [(element, depth) for depth, element in _walk(root, 0) if len(element) == 0 and element.text]
    longest = max((element for element, _ in leaves), key=lambda element: len(element.text))
    longest.text = longest.text.replace(" ", "\n    ", 1)
    for element, depth in leaves:
        element.text = f"\n{'  ' * (depth + 1)}{element.text}\n{'  ' * depth}"
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _walk(element, depth: int):
    yield depth, element
    for child in element:
        yield from _walk(child, depth + 1)


@pytest.mark.parametrize("dataset, name, compact, line", [
    ("webnlg", "dev/1triples/Food.xml", WEBNLG_XML,
     '{"context": "Bacon_Explosion : country : United_States | Bakewell_pudding : served : \\"Warm  or cold\\"", '
     '"completion": "Bacon Explosion comes from the United States.\\tBakewell pudding is served warm or cold.", '
     '"cate": true}'),
    ("dart", "dart-v1.1.1-full-dev.xml", DART_XML,
     '{"context": "Mars Hill College : joined : 1973 | piece of my heart  : directed_by : mark tinker", '
     '"completion": "A school from Mars Hill,\\tNorth Carolina, joined in 1973."}'),
])
def test_indented_and_compact_xml_give_identical_data(tmp_path, capsys, vocab_dir, dataset, name, compact, line):
    outputs = {}
    for layout, text in (("compact", compact), ("indented", indented(compact))):
        assert ("\n      " in text) == (layout == "indented")
        path = tmp_path / layout / name
        path.parent.mkdir(parents=True)
        path.write_text(text)
        assert nlg("data", dataset, "--raw-dir", tmp_path / layout, "--out-dir", tmp_path / f"{layout}_out",
                   "--vocab", vocab_dir) == 0
        outputs[layout] = snapshot(tmp_path / f"{layout}_out")
    assert outputs["indented"] == outputs["compact"]
    assert outputs["compact"]["valid_formatted.jsonl"].decode().splitlines()[0] == line


# ---------------------------------------------------------------------------------------------
# Issue 23, case 8: a system CSV holds each MR of the references once
# ---------------------------------------------------------------------------------------------


def test_a_system_csv_with_missing_or_repeated_mrs_is_refused(tmp_path, capsys, monkeypatch):
    from nlg.metrics import score_files

    monkeypatch.setenv("PATH", str(tmp_path))  # no Java: BLEU and NIST are enough here
    mrs = [f"name[Place {k}], eatType[pub], area[riverside]" for k in range(8)]
    rows = [(mr, f"Place {k} is a pub by the river{'side' * j}.") for k, mr in enumerate(mrs) for j in range(2)]
    refs = tmp_path / "refs.csv"
    refs.write_text('"mr","ref"\n' + "".join(f'"{mr}","{ref}"\n' for mr, ref in rows))

    def system(name: str, chosen: list[int]) -> Path:
        path = tmp_path / name
        path.write_text("mr,output\n" + "".join(f'"{mrs[k]}","Place {k} is a pub by the river."\n' for k in chosen))
        return path

    complete = system("complete.csv", list(range(7, -1, -1)))  # any order
    assert nlg("score", refs, complete, "--json", tmp_path / "s.json") == 0
    assert json.loads((tmp_path / "s.json").read_text())["BLEU"] > 0.5
    capsys.readouterr()
    three = system("three.csv", [0, 1, 2])
    assert nlg("score", refs, three) == 2
    assert error_line(capsys) == (f"nlg score: error: {three}: no output for 5 of the 8 MRs of {refs}, the first "
                                  f"'{mrs[3]}' ({refs}:8); to score a subset, give references holding only its MRs\n")
    twice = system("twice.csv", [*range(8), 5])
    assert nlg("score", refs, twice) == 2
    assert error_line(capsys) == (f"nlg score: error: {twice}:10: the MR '{mrs[5]}' has an output at line 7 "
                                  "already (a system output holds each MR once)\n")
    with pytest.raises(InputError, match=r"three\.csv: no output for 5 of the 8 MRs"):
        score_files("e2e", refs, three)
    # a subset on purpose: references holding only its MRs
    subset = tmp_path / "subset.csv"
    subset.write_text('"mr","ref"\n' + "".join(f'"{mr}","{ref}"\n' for mr, ref in rows[:6]))
    assert nlg("score", subset, three) == 0


# ---------------------------------------------------------------------------------------------
# Issue 23, case 10: JSON inputs within limits, and no lone surrogate
# ---------------------------------------------------------------------------------------------

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


# Issue 23, case 3: adapter scales: `r` a positive integer, `lora_alpha` a finite positive
# number, alpha/r a scale float32 holds, wherever an adapter config is read (beam, analyze,
# resume); case 12: a malformed adapter config is one line too
# ---------------------------------------------------------------------------------------------


def peft_adapter(run: dict[str, Path], directory: Path, **changes: object) -> Path:
    """checkpoint-3's adapter as PEFT writes one: no nlg metadata, no manifest; its
    adapter_config.json changed by `changes` (a value None removes the key)."""
    from safetensors.torch import load_file, save_file

    directory.mkdir()
    source = run["work"] / "checkpoint-3"
    save_file(load_file(str(source / "adapter_model.safetensors")), str(directory / "adapter_model.safetensors"),
              metadata={"format": "pt"})
    config = {**json.loads((source / "adapter_config.json").read_text()), **changes}
    (directory / "adapter_config.json").write_text(json.dumps({k: v for k, v in config.items() if v is not None}))
    return directory


def adapter_argv(command: str, run: dict[str, Path], adapter: Path, tmp_path: Path) -> list[object]:
    if command == "analyze":
        return ["analyze", adapter]
    return ["beam", "--data", write_encoded(tmp_path / "x.jsonl", 2), "--init_checkpoint", run["base"],
            "--lora_checkpoint", adapter, "--output_file", tmp_path / "out.jsonl", "--eos_token_id", EOS,
            "--device", "cpu"]


# (changes to adapter_config.json, the message after its path); checkpoint-3 has r 8 (q and v
# of rank 4 stacked in c_attn) and lora_alpha 64.0
SCALE_CASES = [
    ({"lora_alpha": float("nan")}, "lora_alpha is nan: must be a finite positive number"),
    ({"lora_alpha": 1e308}, "lora_alpha/r is 1e+308/8 = 1.25e+307: the scale must be a positive number "
                            "float32 can hold (at most 3.4e+38)"),
    ({"lora_alpha": -64.0}, "lora_alpha is -64.0: must be a finite positive number"),
    ({"r": 8.7}, "r is 8.7: must be a positive integer (the LoRA rank)"),
    ({"r": True}, "r is True: must be a positive integer (the LoRA rank)"),
    ({"lora_alpha": [64]}, "lora_alpha is [64]: must be a finite positive number"),
    ({"lora_alpha": None}, "no 'lora_alpha' key (every LoRA adapter_config.json has one)"),
    ({"r": None}, "no 'r' key (every LoRA adapter_config.json has one)"),
    ({"alpha_pattern": {"c_attn": "64"}}, "alpha_pattern['c_attn'] is '64': must be a finite positive number"),
    ({"rank_pattern": [8]}, "rank_pattern is [8]: must be an object of module: value"),
]


@pytest.mark.parametrize("changes, message", SCALE_CASES)
@pytest.mark.parametrize("command", ["beam", "analyze"])
def test_an_adapter_scale_that_is_not_finite_and_positive_is_one_line(run, tmp_path, capsys, command, changes,
                                                                      message):
    adapter = peft_adapter(run, tmp_path / "adapter", **changes)
    argv = adapter_argv(command, run, adapter, tmp_path)
    before = snapshot(tmp_path)
    assert nlg(*argv) == 2
    config = adapter / "adapter_config.json"
    if changes == {"lora_alpha": float("nan")}:  # a stricter JSON reader may refuse NaN itself
        assert error_line(capsys).startswith(f"nlg {command}: error: {config}")
    else:
        assert error_line(capsys) == f"nlg {command}: error: {config}: {message}\n"
    assert snapshot(tmp_path) == before  # no predictions, no report


def test_resume_checks_the_adapter_scale_too(run, work, capsys):
    from nlg.files import write_manifest

    checkpoint = work / "checkpoint-3"
    config = checkpoint / "adapter_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "lora_alpha": 1e308}))
    write_manifest(checkpoint)  # as if written so: the manifest agrees, the scale does not
    before = snapshot(work)
    assert nlg(*train_argv(run, work, "--max_step", 3, "--resume", checkpoint)) == 2
    assert error_line(capsys) == (f"nlg train: error: {config}: lora_alpha/r is 1e+308/8 = 1.25e+307: the "
                                  "scale must be a positive number float32 can hold (at most 3.4e+38)\n")
    assert snapshot(work) == before


def test_a_fine_peft_adapter_still_loads(run, tmp_path, capsys):
    adapter = peft_adapter(run, tmp_path / "adapter")
    assert nlg("analyze", adapter, "--json", tmp_path / "report.json") == 0


@pytest.mark.parametrize("alpha, message", [
    ("0", "--lora_alpha 0.0: must be > 0, and --lora_alpha/--lora_dim at most 3.4e+38 (float32's largest number)"),
    ("1e40", "--lora_alpha 1e+40: must be > 0, and --lora_alpha/--lora_dim at most 3.4e+38 "
             "(float32's largest number)"),
])
def test_train_refuses_a_lora_alpha_it_could_not_save(run, tmp_path, capsys, alpha, message):
    assert nlg(*train_argv(run, tmp_path / "w", "--lora_alpha", alpha)) == 2
    assert error_line(capsys) == f"nlg train: error: {message}\n"
    assert not (tmp_path / "w").exists()


# ---------------------------------------------------------------------------------------------
# Issue 23, case 12: an --init_checkpoint that is text, a non-numeric loss in metrics.jsonl
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["train", "beam", "analyze"])
def test_a_text_file_named_bin_is_one_line(run, tmp_path, capsys, command):
    fake = tmp_path / "model.bin"
    fake.write_text("hello\n")
    data = write_encoded(tmp_path / "x.jsonl", 2)
    argv = {"train": ["train", "--train_data", data, "--init_checkpoint", fake, "--work_dir", tmp_path / "w",
                      "--device", "cpu"],
            "beam": ["beam", "--data", data, "--init_checkpoint", fake, "--output_file", tmp_path / "o.jsonl"],
            "analyze": ["analyze", run["work"] / "checkpoint-3", "--base", fake,
                        "--json", tmp_path / "report.json"]}[command]
    assert nlg(*argv) == 2
    prefix = "--init_checkpoint {fake}: " if command == "train" else ""
    assert error_line(capsys) == (f"nlg {command}: error: {prefix.format(fake=fake)}{fake}: not a readable "
                                  "PyTorch file (KeyError: 101)\n")
    assert not (tmp_path / "o.jsonl").exists() and not (tmp_path / "report.json").exists()


@pytest.mark.parametrize("record, message", [
    ({"step": 2, "loss": "abc"}, "'loss' is 'abc', not a finite number"),
    ({"step": 2, "valid_loss": [1.0]}, "'valid_loss' is [1.0], not a finite number"),
    ({"step": 2, "loss": True}, "'loss' is True, not a finite number"),
    ({"step": "2", "loss": 1.0}, "'step' is '2', not an integer"),
])
def test_plot_names_a_loss_that_is_not_a_number(tmp_path, capsys, record, message):
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 2.0}) + "\n" + json.dumps(record) + "\n")
    assert nlg("plot", tmp_path) == 2
    assert error_line(capsys) == f"nlg plot: error: {tmp_path / 'metrics.jsonl'}:2: {message}\n"
    assert not (tmp_path / "loss.png").exists()


# ---------------------------------------------------------------------------------------------
# Issue 23, case 6: a --seq_len that cuts away every completion token
# ---------------------------------------------------------------------------------------------


def test_a_seq_len_that_leaves_no_completion_token_stops_before_training(run, tmp_path, capsys):
    """Contexts of 7 tokens (6 and the separator) under --seq_len 7: the loss would be 0.0000
    at every step, and an adapter that learnt nothing would be saved."""
    work = tmp_path / "w"
    assert nlg(*train_argv(run, work, "--seq_len", 7, "--max_step", 2)) == 2
    assert error_line(capsys) == (f"nlg train: error: {run['data']}: no pair keeps a completion token: all 24 "
                                  "pairs' contexts fill --seq_len 7 (contexts of 7 to 7 tokens: --seq_len 8 "
                                  "keeps a completion token of every pair)\n")
    assert not work.exists()


def test_a_seq_len_that_empties_some_pairs_says_how_many(run, tmp_path, capsys):
    records = [json.loads(line) for line in run["data"].read_text().splitlines()]
    for record in records[::3]:  # 8 of 24 contexts become 21 tokens long
        record["context"] *= 3
    data = tmp_path / "mixed.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    argv = train_argv(run, tmp_path / "w", "--seq_len", 10, "--max_step", 1)
    argv[argv.index(run["data"])] = data
    assert nlg(*argv) == 0
    out, err = capsys.readouterr()
    assert err.splitlines()[0] == (f"warning: {data}: 8 of 24 pairs lose every completion token to --seq_len 10 "
                                   "(contexts of 7 to 21 tokens: --seq_len 22 keeps a completion token of every "
                                   "pair); they add nothing to the loss")
    assert "data: 24 training pairs (24 cut to --seq_len 10, 8 with no completion token left)" in out


def test_a_validation_file_without_completion_tokens_is_refused_too(run, tmp_path, capsys):
    valid = tmp_path / "valid.jsonl"
    valid.write_text(json.dumps({"context": list(range(1, 40)), "completion": [5, EOS]}) + "\n")
    assert nlg(*train_argv(run, tmp_path / "w", "--valid_data", valid, "--max_step", 1)) == 2
    assert error_line(capsys) == (f"nlg train: error: {valid}: no pair keeps a completion token: all 1 pairs' "
                                  "contexts fill --seq_len 32 (contexts of 39 to 39 tokens: --seq_len 40 keeps "
                                  "a completion token of every pair)\n")


# ---------------------------------------------------------------------------------------------
# Issue 23, case 11: Ctrl-C and SIGTERM end training with one line, exit 130 / 143
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_ends_training_with_one_line_and_whole_checkpoints(run, tmp_path, sig, code):
    """A real process, signalled mid-run (a checkpoint every step, so mostly while one is written)."""
    from nlg.files import lock_file
    from nlg.training.checkpoints import list_checkpoints

    work = tmp_path / "work"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    argv = [str(a) for a in train_argv(run, work, "--max_step", 100_000, "--log_interval", 100_000)[1:]]
    proc = subprocess.Popen([sys.executable, "-m", "nlg.train", *argv], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while len(list_checkpoints(work)) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, "the run did not start"
            time.sleep(0.05)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == code
    latest = list_checkpoints(work)[-1]
    step = int(err.split("interrupted at step ")[-1].split(";")[0]) if "interrupted at step " in err else -1
    assert err == f"nlg train: interrupted at step {step}; {latest[1]} is the latest\n"
    assert latest[0] <= step
    for _, checkpoint in list_checkpoints(work):
        verify_checkpoint(checkpoint)  # every checkpoint whole: the one being written went whole
    assert not [p.name for p in work.iterdir() if p.name.startswith(".")]  # nor left a temporary one
    with lock_file(work / "train.lock"):  # released
        pass


def test_an_interrupt_before_any_checkpoint_says_so(run, tmp_path, monkeypatch, capsys):
    from helpers import killed_run

    work = tmp_path / "work"
    killed_run([str(a) for a in train_argv(run, work, "--max_step", 3)[1:]], 1, monkeypatch)
    assert capsys.readouterr().err == "nlg train: interrupted at step 0; no checkpoint was written\n"


# ---------------------------------------------------------------------------------------------
# Issue 23, case 4: --resume refuses changed settings, base model or data, unless
# --allow_changed names them; then the new value takes effect and is logged
# ---------------------------------------------------------------------------------------------


def identity(path: Path) -> str:
    import hashlib

    return f"{path} ({path.stat().st_size:,} bytes, sha256 {hashlib.sha256(path.read_bytes()).hexdigest()[:12]})"


def other_data(run: dict[str, Path], path: Path) -> Path:
    """The run's training file with its first two pairs swapped: as many pairs, as many bytes."""
    lines = run["data"].read_text().splitlines(keepends=True)
    path.write_text("".join([lines[1], lines[0], *lines[2:]]))
    assert path.stat().st_size == run["data"].stat().st_size
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
def test_resume_refuses_a_changed_setting_or_input_by_name(run, work, tmp_path, capsys, change, message):
    argv = train_argv(run, work, "--max_step", 3, "--resume", "latest")
    if change == "train_data":
        old, new = run["data"], other_data(run, tmp_path / "other.jsonl")
        argv = replaced(argv, old, new)
    elif change == "init_checkpoint":
        other = trainable_base(tmp_path / "base", CONFIG, seed=1)  # the same shape, other weights
        old, new = run["base"] / "model.safetensors", other / "model.safetensors"
        argv = replaced(argv, run["base"], other)
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


def test_a_moved_copy_of_the_same_inputs_resumes(run, work, tmp_path):
    data = Path(shutil.copy(run["data"], tmp_path / "moved.jsonl"))
    base = Path(shutil.copytree(run["base"], tmp_path / "base"))
    argv = replaced(replaced(train_argv(run, work, "--max_step", 3, "--resume", work / "checkpoint-2"),
                             run["data"], data), run["base"], base)
    assert nlg(*argv, "--log_interval", 3, "--save_interval", 3, "--compile", "static") == 0


@pytest.mark.parametrize("change, lr", [
    (["--lr", 0.3], 0.3 * (3 - 2) / 3),  # the new peak lr on the same linear decay to step 3
    (["--max_step", 5], 2e-4 * (5 - 2) / 5),  # the schedule the new length gives, at step 2
])
def test_allow_changed_takes_effect_and_is_logged(run, work, capsys, change, lr):
    name = change[0][2:]
    shutil.rmtree(work / "checkpoint-3")
    argv = train_argv(run, work, "--max_step", 3, "--resume", "latest", *change, "--allow_changed", name)
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


def test_every_checkpoint_records_its_inputs(run):
    import hashlib

    def entry(path: Path, name: str) -> dict:
        return {"path": str(path), "file": name, "bytes": path.stat().st_size,
                "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}

    state = torch.load(run["work"] / "checkpoint-3" / "training_state.pt", weights_only=True)
    model_files = [p for p in sorted(run["base"].iterdir()) if p.name != "generation_config.json"]
    assert state["inputs"] == {"train_data": [entry(run["data"], "")], "valid_data": None,
                               "init_checkpoint": sorted((entry(p, p.name) for p in model_files),
                                                         key=lambda e: e["file"])}
    config = json.loads((run["work"] / "train_config.json").read_text())
    assert config["inputs"] == state["inputs"] and config["resumed_from"] is None


def test_a_checkpoint_without_recorded_inputs_resumes_with_a_warning(run, work, capsys):
    from nlg.files import write_manifest
    from nlg.training.checkpoints import torch_save

    checkpoint = work / "checkpoint-3"
    state = torch.load(checkpoint / "training_state.pt", weights_only=True)
    del state["inputs"]
    with (checkpoint / "training_state.pt").open("wb") as handle:
        torch_save(state, handle)
    write_manifest(checkpoint)
    assert nlg(*train_argv(run, work, "--max_step", 3, "--resume", "latest")) == 0
    assert capsys.readouterr().err == (
        f"warning: {checkpoint} records no identity of its inputs (written before nlg recorded them): its settings "
        "match, but whether --train_data, --valid_data and --init_checkpoint are the files it was trained on "
        "cannot be checked\n")


@pytest.mark.parametrize("allowed, message", [
    ("lora_dim", "--allow_changed lora_dim: cannot change on --resume (the checkpoint's data order, its position "
                 "in the epoch or its weights' shape depend on it)"),
    ("learning_rate", "--allow_changed learning_rate: not a setting of nlg train"),
])
def test_allow_changed_refuses_what_cannot_change(run, tmp_path, capsys, allowed, message):
    assert nlg(*train_argv(run, tmp_path / "w", "--allow_changed", allowed)) == 2
    assert error_line(capsys) == f"nlg train: error: {message}\n"


def test_allow_changed_takes_another_training_file_and_records_it(run, work, tmp_path, capsys):
    shutil.rmtree(work / "checkpoint-3")
    data = other_data(run, tmp_path / "other.jsonl")
    argv = replaced(train_argv(run, work, "--max_step", 3, "--resume", "latest", "--allow_changed", "train_data"),
                    run["data"], data)
    assert nlg(*argv) == 0
    assert (f"changed on resume (--allow_changed): --train_data: checkpoint {identity(run['data'])}, now "
            f"{identity(data)}\n") in capsys.readouterr().out
    state = torch.load(work / "checkpoint-3" / "training_state.pt", weights_only=True)
    assert state["inputs"]["train_data"][0]["path"] == str(data)
    record = json.loads((work / "train_config.json").read_text())["resumed_from"]
    assert record["changed"]["train_data"]["now"] == state["inputs"]["train_data"]


def test_a_shorter_run_than_the_checkpoint_is_refused(run, work, capsys):
    before = snapshot(work)
    assert nlg(*train_argv(run, work, "--max_step", 2, "--resume", "latest", "--allow_changed", "max_step")) == 2
    assert error_line(capsys) == (f"nlg train: error: {work / 'checkpoint-3'}: the checkpoint is at step 3, past "
                                  "the 2 steps this run's --max_step/--max_epoch plan\n")
    assert snapshot(work) == before
