"""nlg.results.scores: a suite's scores on the paper's printed scale."""

from __future__ import annotations

from nlg.results.scores import on_paper_scale


def test_scales_follow_the_papers_table():
    e2e_percent, webnlg_percent = frozenset({"BLEU", "METEOR", "ROUGE_L"}), frozenset({"BLEU"})
    # E2E scores BLEU on 0..1, the paper prints it in percent
    assert on_paper_scale(0.70412, "BLEU", e2e_percent, frozenset()) == 70.41
    assert on_paper_scale(8.851234, "NIST", e2e_percent, frozenset()) == 8.8512
    # GenerationEval's BLEU is already 0..100; METEOR and TER are fractions in both
    assert on_paper_scale(55.314, "BLEU", webnlg_percent, webnlg_percent) == 55.31
    assert on_paper_scale(0.41237, "METEOR", webnlg_percent, webnlg_percent) == 0.4124
    assert on_paper_scale(55.3, "BLEU", frozenset(), webnlg_percent) == 0.553
    assert on_paper_scale(None, "BLEU", webnlg_percent, webnlg_percent) is None
