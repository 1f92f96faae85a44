import subprocess
import sys

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

    assert run_main(broken, []) == 2
    assert "error: f.txt:3: bad line" in capsys.readouterr().err
