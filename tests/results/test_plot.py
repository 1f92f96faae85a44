import json

import pytest
from helpers import error_line, nlg

from nlg.cli import main as cli
from nlg.files import InputError
from nlg.results.plot import read_curves


def write_metrics(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_reads_train_and_valid_curves(tmp_path):
    write_metrics(tmp_path / "metrics.jsonl", [
        {"step": 10, "loss": 5.0, "lr": 1e-4}, {"step": 20, "loss": 4.0},
        {"step": 20, "valid_loss": 4.5, "valid_ppl": 90.0}, {"step": 30, "loss": 3.5},
    ])
    curves = read_curves(tmp_path / "metrics.jsonl")
    assert curves.train_steps == [10, 20, 30] and curves.train_loss == [5.0, 4.0, 3.5]
    assert curves.valid_steps == [20] and curves.valid_loss == [4.5]


def test_record_without_step_names_line(tmp_path):
    write_metrics(tmp_path / "metrics.jsonl", [{"step": 1, "loss": 2.0}, {"loss": 1.0}])
    with pytest.raises(InputError, match=r"metrics.jsonl:2: .*step"):
        read_curves(tmp_path / "metrics.jsonl")


def test_cli_writes_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    write_metrics(tmp_path / "metrics.jsonl", [{"step": s, "loss": 6 - s / 10} for s in range(1, 30)]
                  + [{"step": 29, "valid_loss": 3.3}])
    assert cli(["plot", str(tmp_path)]) == 0
    png = (tmp_path / "loss.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000


def test_cli_without_log_is_exit_2(tmp_path, capsys):
    assert cli(["plot", str(tmp_path)]) == 2
    assert "no metrics log" in capsys.readouterr().err


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
