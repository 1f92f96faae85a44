"""Write the E2E results table (Markdown + JSON) beside the paper's numbers.

usage: results_table.py SCORES_JSON OUT_MD CARD [UNTRAINED_SCORES_JSON]

SCORES_JSON is what `nlg score --json` writes. BLEU, METEOR and ROUGE-L are shown in percent,
as in the paper's table; NIST and CIDEr as they are. The JSON goes beside OUT_MD (.json).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

METRICS = ("BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr")
PERCENT = {"BLEU", "METEOR", "ROUGE_L"}
# LoRA paper, Table 3, E2E test set, GPT-2 M with LoRA.
PAPER = {"gpt2.md": {"BLEU": 70.4, "NIST": 8.85, "METEOR": 46.8, "ROUGE_L": 71.8, "CIDEr": 2.53}}


def shown(value: float | None, metric: str) -> float | None:
    if value is None:
        return None
    return round(value * 100, 2) if metric in PERCENT else round(value, 4)


def cell(value: float | None) -> str:
    return "n/a" if value is None else str(value)


def main(argv: list[str]) -> int:
    if len(argv) not in (3, 4):
        print(__doc__, file=sys.stderr)
        return 2
    scores = json.loads(Path(argv[0]).read_text())
    out, card = Path(argv[1]), argv[2]
    untrained = json.loads(Path(argv[3]).read_text()) if len(argv) == 4 else None
    paper = PAPER.get(card)
    header = ["metric", f"this run ({card})"]
    if untrained is not None:
        header.append(f"untrained {card}")
    if paper is not None:
        header.append("paper (GPT-2 M, LoRA)")
    rows = ["| " + " | ".join(header) + " |", "| --- |" + " ---: |" * (len(header) - 1)]
    table: dict[str, dict[str, float | None]] = {}
    for metric in METRICS:
        entry = {"this_run": shown(scores.get(metric), metric)}
        if untrained is not None:
            entry["untrained"] = shown(untrained.get(metric), metric)
        if paper is not None:
            entry["paper"] = paper[metric]
        table[metric] = entry
        rows.append(f"| {metric} | " + " | ".join(cell(v) for v in entry.values()) + " |")
    text = "\n".join(rows) + "\n"
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps({"model_card": card, "results": table}, indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
