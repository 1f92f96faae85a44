import io
import os
import subprocess
import sys
from pathlib import Path

from helpers import REPO, snapshot

from nlg.cli import COMMANDS, main


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_unknown_command_fails(capsys):
    assert main(["frobnicate"]) == 2
    assert "unknown command" in capsys.readouterr().err


def test_python_dash_m_runs():
    result = subprocess.run([sys.executable, "-m", "nlg", "--version"], capture_output=True, text=True)
    assert result.returncode == 0
    assert result.stdout.startswith("nlg ")


def test_spellings():
    from nlg.cli import spellings

    assert spellings("train_data") == ["--train_data", "--train-data"]
    assert spellings("beam") == ["--beam"]


def test_run_main_turns_input_error_into_exit_2(capsys):
    from nlg.cli import run_main
    from nlg.files import InputError

    def broken(argv):
        raise InputError("f.txt:3: bad line")

    assert run_main(broken, [], prog="nlg x") == 2
    assert capsys.readouterr().err == "nlg x: error: f.txt:3: bad line\n"


def test_scoring_data_and_decode_run_where_torch_cannot_be_imported(tmp_path):
    """`nlg score` (both suites), `nlg data`/`nlg decode` and both eval/ scripts never import torch;
    the commands that need it name the extra to install."""
    repo = Path(__file__).resolve().parents[1]
    shadow = tmp_path / "shadow" / "torch"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'torch'\", name='torch')\n"
    )
    env = {"PYTHONPATH": f"{shadow.parent}:{repo}", "PATH": str(tmp_path)}  # no java either
    (tmp_path / "ref.txt").write_text("the cat sat\n\nhello world\n\n")
    (tmp_path / "reference0").write_text("the cat sat\nhello world\n")
    (tmp_path / "pred.txt").write_text("the cat sat\nhello\n")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, *args], capture_output=True, text=True, env=env, cwd=tmp_path
        )

    assert run("-c", "import torch").returncode == 1
    runs = [
        run("-m", "nlg", "score", "ref.txt", "pred.txt"),
        run("-m", "nlg", "score", str(tmp_path), "pred.txt", "-m", "bleu,chrf++,ter"),
        run(str(repo / "eval" / "measure_scores.py"), "ref.txt", "pred.txt"),
        run(
            str(repo / "eval" / "generation_eval.py"),
            "-R",
            "reference0",
            "-H",
            "pred.txt",
            "-nr",
            "1",
            "-m",
            "bleu,ter",
        ),
        run("-m", "nlg", "decode", "--help"),
        run("-m", "nlg", "data", "--help"),
    ]
    for done in runs:
        assert done.returncode == 0, done.args[1:] + [done.stderr[-2000:]]
    assert "BLEU" in runs[0].stdout and "TER" in runs[1].stdout and "TER" in runs[3].stdout
    for command in ("train", "beam", "analyze"):
        done = run("-m", "nlg", command, "--help")
        assert done.returncode == 2 and done.stdout == ""
        assert (
            f"nlg {command} needs torch" in done.stderr
            and "pip install 'nlg[train]'" in done.stderr
        )


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


def test_progress_bars_only_on_a_terminal(tmp_path, capsys):
    """nlg beam and nlg train draw their bars only when stderr is a terminal (a log file or a
    pipe gets none); beam's --no_progress turns the bar off on a terminal too."""
    from helpers import RUN_EOS, write_encoded

    from nlg.cli import show_progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    closed = io.StringIO()
    closed.close()
    assert show_progress(stream=Terminal()) and not show_progress(False, Terminal())
    assert not show_progress(stream=io.StringIO()) and not show_progress(stream=closed)
    assert not show_progress(stream=object())
    data = write_encoded(tmp_path / "x.jsonl", 2)
    assert main(["beam", "--data", str(data), "--model_card", "gpt2.tiny", "--output_file", str(tmp_path / "p.jsonl"),
                 "--beam", "1", "--eval_len", "2", "--eos_token_id", str(RUN_EOS)]) == 0
    assert "ctx" not in capsys.readouterr().err  # captured stderr is no terminal: no bar
