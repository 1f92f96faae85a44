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


def test_results_plot_draws_untrained_as_a_level_and_every_paper_row(tmp_path, write):
    """Issue 29 case 10: the untrained model is no point at LoRA's parameter count; the paper's
    rows of GPT-2 M and L (LoRA's among them) are points of their own."""
    from nlg.results import runs_results
    from nlg.results.plot import CARD_MARKERS, plot_points

    def scores_json(values: dict, dataset: str) -> str:  # as in test_tables
        return json.dumps({**values, "scored": {"suite": "webnlg", "dataset": dataset, "metrics": list(values),
                                                "instances": 3, "references_sha256": "0" * 64}})

    run = tmp_path / "run"
    write(run / "s.json", scores_json({"BLEU": 20.0, "METEOR": 0.2, "TER": 0.8}, "webnlg"))
    write(run / "u.json", scores_json({"BLEU": 1.0, "METEOR": 0.01, "TER": 1.5}, "webnlg"))
    write(run / "run.json", json.dumps({
        "dataset": "webnlg", "model_card": "gpt2.tiny", "method": "lora", "seed": 110, "params": 22528,
        "settings": {"SEED": "110"}, "checkpoint": "lora/checkpoint-300", "selection": None,
        "subsets": {"all": {"scores": "s.json"}}, "untrained": {"all": {"scores": "u.json"}}}))
    _, _, rows = runs_results("webnlg", [run])
    points, levels, left_out = plot_points(rows, "BLEU", "all")
    assert levels == [1.0] and left_out == []
    assert [(r.kind, x, y) for r, x, y, _ in points if r.kind != "paper"] == [("run", 22528, 20.0)]
    paper = {(r.model_card, r.method) for r, *_ in points if r.kind == "paper"}
    assert {("gpt2.md", "lora"), ("gpt2.lg", "lora"), ("gpt2.md", "full"), ("gpt2.lg", "full")} <= paper
    assert CARD_MARKERS["gpt2.md"] != CARD_MARKERS["gpt2.lg"]
    pytest.importorskip("matplotlib")
    from nlg.results.plot import plot_rows

    png, left_out = plot_rows(rows, ("BLEU", "METEOR", "TER"), ["all"])
    assert png.startswith(b"\x89PNG") and left_out == []


@pytest.mark.parametrize("records", [
    [{"step": 100, "loss": 3.31}, {"step": 100, "valid_loss": 3.3}, {"step": 200, "loss": 3.2},
     {"step": 300, "loss": 3.14}, {"step": 300, "valid_loss": 3.19}],  # the demo's 3 points, 0.17 wide
    [{"step": 5, "valid_loss": 4.0}],  # one point
    [{"step": s, "loss": 2.0} for s in range(1, 4)],  # flat
])
def test_short_runs_plot_their_points_readably(tmp_path, records):
    """Short runs: markers on every point with its value, a y axis with room and plain values
    (no offset), integer steps."""
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nlg.results.plot import plot_curves

    write_metrics(tmp_path / "metrics.jsonl", records)
    curves = read_curves(tmp_path / "metrics.jsonl")
    shown = []
    original = plt.close
    plt.close = lambda figure=None: shown.append(figure)  # keep the figure to look at it
    try:
        plot_curves(curves, tmp_path / "loss.png")
    finally:
        plt.close = original
    axes = shown[0].axes[0]
    low, high = axes.get_ylim()
    losses = curves.train_loss + curves.valid_loss
    assert low < min(losses) and high > max(losses) and high - low >= 0.02
    assert not axes.yaxis.get_major_formatter().get_useOffset()
    texts = [t.get_text() for t in axes.texts]
    assert sorted(texts) == sorted(f"{v:.4g}" for v in losses)
    assert all(line.get_marker() not in (None, "None", "") for line in axes.lines)
    original(shown[0])


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
