"""bench/latency.py (Table 1): the adapters at the paper's sizes, and one tiny run's report."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from nlg import methods

BENCH = Path(__file__).resolve().parents[2] / "bench" / "latency.py"


@pytest.fixture(scope="module")
def latency():
    spec = importlib.util.spec_from_file_location("latency", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["latency"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules["latency"]


def test_adapter_widths_give_the_papers_sizes_on_gpt2_m(latency) -> None:
    for method in ("adapter-l", "adapter-h"):
        for size in (0.5e6, 11e6):
            r = latency.adapter_width(method, "gpt2.md", size)
            count = methods.card_count(method, "gpt2.md", {"adapter_dim": r})
            step = methods.card_count(method, "gpt2.md", {"adapter_dim": r + 1}) - count
            assert abs(count - size) <= step / 2  # the nearest a width can come


def test_a_tiny_cpu_run_reports_every_variant_and_says_it_is_not_the_papers(latency, tmp_path, capsys) -> None:
    out = tmp_path / "latency.json"
    assert latency.main(["--device", "cpu", "--card", "gpt2.tiny", "--shapes", "2x8,1x4", "--trials", "2",
                         "--warmup", "0", "--json", str(out)]) == 0
    assert "not the paper's setting" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert not report["paper_setting"]
    variants, skipped = latency.variants_of("gpt2.tiny")
    assert [(r["batch"], r["variant"]) for r in report["rows"]] == [(b, v) for b in (2, 1) for v in variants]
    assert report["skipped"] == skipped
    # every method has its rows or says why not: a new method appears without an edit
    named = [v for v in variants if v != "base" and not v.endswith(":merged")]
    assert sorted(named + list(skipped)) == sorted(methods.names()) and not set(named) & set(skipped)
    assert [v for v in variants if v.endswith(":merged")] == [f"{n}:merged" for n in named if methods.get(n).merges]
    assert {"lora", "lora:merged", "adapter-l", "adapter-h", "prefix"} <= set(variants)
    assert skipped["full"] == "adds no parameters: decodes as the base model"
    for row in report["rows"]:
        assert row["mean_ms"] > 0 and (row["added_params"] > 0) == (row["variant"] != "base")


def test_a_merged_row_computes_what_the_unmerged_one_does(latency) -> None:
    for name in ("lora", "ia3"):
        unmerged, added = latency.build(name, "gpt2.tiny", 1e4, torch.device("cpu"), torch.float32)
        merged, same = latency.build(f"{name}:merged", "gpt2.tiny", 1e4, torch.device("cpu"), torch.float32)
        x = torch.randint(0, 300, (2, 5))
        with torch.no_grad():
            assert added == same > 0 and torch.allclose(unmerged(x), merged(x), atol=1e-5)
