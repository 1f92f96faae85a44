"""nlg.metrics.resample without Java: each resample's value equals the scorer's on the resampled
lists (the tests in tests/test_compare.py add METEOR, ROUGE-L and CIDEr through `nlg score`)."""

from __future__ import annotations

import numpy as np
import pytest

from nlg.metrics import e2e, webnlg
from nlg.metrics.resample import (
    CiderReferences,
    CiderResampler,
    cider_values,
    counts,
    resamplers,
    segment_rows,
)

REFS = [
    ["The Eagle is a pub with 0 stars .", "Eagle , a pub rated 0 stars", "a pub : The Eagle"],
    ["Aromi serves Italian food near the river .", "Italian food at Aromi by the river"],
    ["The Mill is cheap .", "Cheap food : The Mill ."],
    ["Zizzi is a family friendly pub near the centre .", "family friendly Zizzi pub"],
    ["Blue Spice , 5 out of 5 , riverside .", "Blue Spice is rated 5 out of 5 ."],
    ["The Punter serves fast food for 20-25 pounds ."],
    ["Loch Fyne is a coffee shop .", "coffee shop Loch Fyne", "Loch Fyne , a coffee shop"],
]
HYPS = [
    "The Eagle is a pub with 0 stars .",
    "Aromi is an Italian restaurant near the river .",
    "",
    "Zizzi is a pub near the centre , family friendly .",
    "Blue Spice has 5 out of 5 stars .",
    "The Punter serves fast food .",
    "Loch Fyne coffee shop coffee shop .",
]
ROWS = np.random.default_rng(7).integers(0, len(REFS), (25, len(REFS)))


def lowered(text: str) -> str:  # a stand-in for the PTB tokenizer's output
    return " ".join(w for w in text.lower().split() if w not in {".", ","})


def test_helpers():
    assert counts(np.array([[0, 0, 2], [1, 2, 2]]), 3).tolist() == [[2, 0, 1], [0, 1, 2]]
    values = np.arange(10.0).reshape(5, 2)
    assert segment_rows(values, np.array([0, 0, 2, 2, 3]), 5).tolist() == [
        [2, 4], [0, 0], [10, 12], [8, 9], [0, 0]
    ]


@pytest.mark.parametrize("pymteval", [False, True])
def test_mteval_bleu_nist(pymteval):
    with resamplers("e2e", REFS, [HYPS], java=None, pymteval=pymteval) as made:
        assert made.missing == ("METEOR", "ROUGE_L", "CIDEr")
        values = made.values(ROWS)[0]
    for k, row in enumerate(ROWS):
        expected = e2e.score(
            [REFS[i] for i in row], [HYPS[i] for i in row], java=None, pymteval=pymteval
        ).scores
        assert values["BLEU"][k] == expected["BLEU"]
        assert values["NIST"][k] == pytest.approx(expected["NIST"], rel=1e-12)


def test_webnlg_bleu_chrf_ter():
    refs = [r + [""] * (3 - len(r)) for r in REFS]
    refs[2] = ["", "", ""]  # no reference: chrF++ leaves the instance out
    metrics = "bleu,chrf++,ter"
    with resamplers("webnlg", refs, [HYPS], metrics=metrics) as made:
        values = made.values(np.vstack([ROWS, [2] * len(REFS)]))[0]
    for k, row in enumerate([*ROWS, [2] * len(REFS)]):
        expected = webnlg.score([refs[i] for i in row], [HYPS[i] for i in row], metrics=metrics)
        for name, value in expected.scores.items():
            assert values[name][k] == value, (k, name)


def test_cider_d_equals_pycocoevalcap():
    from pycocoevalcap.cider.cider import Cider

    ref_tokens = [[lowered(r) for r in refs] for refs in REFS]
    hyp_tokens = [lowered(h) for h in HYPS]
    other = [lowered(h + " extra words here") for h in HYPS]
    cider_refs = CiderReferences(ref_tokens)
    systems = [CiderResampler(cider_refs, hyp_tokens), CiderResampler(cider_refs, other)]
    values = cider_values(cider_refs, systems, ROWS)
    for k, row in enumerate(ROWS):
        gts = {j: ref_tokens[i] for j, i in enumerate(row)}
        for hyps, got in ((hyp_tokens, values[0]), (other, values[1])):
            expected, _ = Cider().compute_score(gts, {j: [hyps[i]] for j, i in enumerate(row)})
            assert got[k] == pytest.approx(float(expected), rel=1e-12)
