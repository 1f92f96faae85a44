"""Wall time of `nlg score` on the WebNLG 2017 test set against GenerationEval's own metric code.

    python bench/webnlg_score_speed.py --generation-eval DIR [--python PY] [--repeat N] [--raw]

The test set (1,862 entries, testdata_with_lex.xml from the shared data, `NLG_SHARED_DIR`) is
written to a temporary folder as GenerationEval reads it: reference0..5 (an entry's first six
texts, an empty line where it has fewer) and a hypothesis file holding a crude template
realisation of each entry's triples; tokenised and lower-cased as the LoRA paper's decoder
writes them (`--raw`: as they are). GenerationEval gets the files without their final newline
(with it, its METEOR fails and its TER counts an extra empty instance), `nlg score` with it.

Both sides compute BLEU, METEOR, chrF++ and TER, each as a fresh process (imports, JVM starts):
  * GenerationEval: its eval.py imported from DIR (a checkout of github.com/WebNLG/GenerationEval
    with metrics/multi-bleu-detok.perl, metrics/chrF.py and METEOR 1.5 in metrics/meteor-1.5/;
    the jar and data/ pycocoevalcap ships will do) by `PY` (default: this Python), which needs
    pyter3 and nltk with Punkt's English data; its BERTScore, BLEURT and razdel imports are
    stubbed (unused for English without those metrics), and `run(...)` is called in DIR;
  * `python -m nlg.score`: first once with a fresh METEOR cache ("cold", reported on its own),
    then with that cache ("warm", the usual case when scoring system after system).
Prints wall and CPU times (the process and its children), the ratios, and whether the scores
agree (BLEU at GenerationEval's two decimals, the others to 1e-4).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from score_speed import REPO, SHARED, timed  # noqa: E402

NUM_REFS = 6
# Runs GenerationEval's eval.py: stub the imports unused here, call run(), print its result.
BASELINE = """
import json, sys, types
for name in ("bert_score", "razdel", "tabulate", "metrics.bleurt", "metrics.bleurt.bleurt"):
    stub = types.ModuleType(name)
    stub.score = stub.tokenize = stub.tabulate = None
    sys.modules.setdefault(name, stub)
sys.path.insert(0, ".")
import eval as generation_eval
result = generation_eval.run(sys.argv[1], sys.argv[2], 6, metrics="bleu,meteor,chrf++,ter")
print("RESULT " + json.dumps(result))
"""


def paper_tokenize(text: str) -> str:
    """The LoRA paper's decode with --tokenize --lower."""
    return " ".join(" ".join(re.split(r"(\W)", text.lower())).split())


def template(triples: list[str]) -> str:
    parts = [[x.strip().replace("_", " ").strip('"') for x in t.split("|")] for t in triples]
    return " ".join(f"{s} {p} {o}." for s, p, o in parts)


def write_test_set(xml: Path, folder: Path, raw: bool) -> int:
    """reference0..5 and hypothesis with a final newline in folder/nl, without in folder/nonl."""
    columns: list[list[str]] = [[] for _ in range(NUM_REFS + 1)]
    for entry in ET.parse(xml).getroot().iter("entry"):
        texts = [lex.text or "" for lex in entry.iter("lex")][:NUM_REFS]
        texts = [template([t.text for t in entry.iter("mtriple")])] + texts
        texts += [""] * (NUM_REFS + 1 - len(texts))
        for column, text in zip(columns, texts, strict=True):
            column.append(text if raw else paper_tokenize(text))
    names = ["hypothesis"] + [f"reference{i}" for i in range(NUM_REFS)]
    for end, sub in (("\n", "nl"), ("", "nonl")):
        (folder / sub).mkdir()
        for name, column in zip(names, columns, strict=True):
            (folder / sub / name).write_text("\n".join(column) + end, encoding="utf-8")
    return len(columns[0])


def agree(ours: dict, theirs: dict) -> bool:
    return f"{ours['BLEU']:.2f}" == f"{theirs['bleu']:.2f}" and all(
        abs(ours[k] - theirs[k.lower()]) < 1e-4 for k in ("METEOR", "chrF++", "TER")
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--generation-eval", required=True, metavar="DIR", type=Path)
    parser.add_argument("--python", default=sys.executable, help="Python for GenerationEval")
    parser.add_argument("--repeat", type=int, default=1, help="runs per side; the fastest counts")
    parser.add_argument("--raw", action="store_true", help="untokenised text")
    args = parser.parse_args()
    xml = SHARED / "data" / "webnlg-2017" / "test" / "testdata_with_lex.xml"
    if not xml.is_file():
        sys.exit(f"WebNLG test data not found at {xml} (set NLG_SHARED_DIR)")
    with tempfile.TemporaryDirectory() as tmp:
        n = write_test_set(xml, Path(tmp), args.raw)
        nl, nonl = Path(tmp) / "nl", Path(tmp) / "nonl"
        json_out = Path(tmp) / "scores.json"
        ours_cmd = [
            sys.executable,
            "-m",
            "nlg.score",
            str(nl),
            str(nl / "hypothesis"),
            "--json",
            str(json_out),
        ]
        base_cmd = [args.python, "-c", BASELINE, str(nonl / "reference"), str(nonl / "hypothesis")]
        print(
            f"WebNLG 2017 test: {n} instances, {NUM_REFS} reference files, template hypotheses, "
            f"{'raw' if args.raw else 'tokenised'} text; {os.cpu_count()} CPUs"
        )
        env = {**os.environ, "NLG_CACHE_DIR": str(Path(tmp) / "cache"), "PYTHONPATH": str(REPO)}
        cold_wall, cold_cpu, _ = timed(ours_cmd, REPO, env)
        runs: dict[str, list[tuple[float, float]]] = {"ours": [], "base": []}
        for _ in range(args.repeat):  # alternate, so that machine load hits both sides alike
            wall, cpu, _ = timed(ours_cmd, REPO, env)
            runs["ours"].append((wall, cpu))
            wall, cpu, out = timed(base_cmd, args.generation_eval.resolve())
            runs["base"].append((wall, cpu))
        ours = json.loads(json_out.read_text())
        ours.pop("scored")  # the record of what was scored, not a score
    theirs = json.loads(re.findall(r"^RESULT (.*)$", out, re.M)[-1])
    best = {side: min(runs[side]) for side in runs}
    print(
        f"nlg score, first run (builds its cache): {cold_wall:7.2f} s wall, {cold_cpu:7.2f} s CPU"
    )
    for side, label in (("ours", "nlg score     "), ("base", "GenerationEval")):
        walls = ", ".join(f"{wall:.2f}" for wall, _ in runs[side])
        print(f"{label}: {best[side][0]:7.2f} s wall, {best[side][1]:7.2f} s CPU   (runs: {walls})")
    wall_ratio, cpu_ratio = (best["ours"][i] / best["base"][i] for i in (0, 1))
    print(
        f"ratio nlg/GenerationEval: wall {wall_ratio:.3f} (x{1 / wall_ratio:.1f}), CPU {cpu_ratio:.3f}"
    )
    print(f"cold ratio: wall {cold_wall / best['base'][0]:.3f}")
    same = agree(ours, theirs)
    print(f"scores {'agree' if same else 'DIFFER'}: nlg {json.dumps(ours)}")
    print(f"                GenerationEval {json.dumps(theirs)}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
