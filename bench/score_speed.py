"""Wall time of `nlg score` on the E2E test set against the official scorer, or a stock baseline.

    python bench/score_speed.py [--official DIR] [-p] [--repeat N]

The E2E test set (630 meaning representations, 4693 references) is read from the shared data
(`NLG_SHARED_DIR`, default ../shared) and written to a temporary REF file; the predictions are a
simple template realisation of each meaning representation.

Baseline, every side run as a fresh process (imports and JVM starts included):
  * with `--official DIR` or `E2E_METRICS_DIR=DIR` (a checkout of github.com/tuetschek/e2e-metrics):
    `python DIR/measure_scores.py REF PRED [-p]`, the official scorer itself;
  * otherwise the official pipeline rebuilt from stock pycocoevalcap, run one step after another as
    measure_scores.py does: PTBTokenizer on the references, PTBTokenizer on the predictions,
    Meteor, Rouge, Cider, then BLEU/NIST (ours: the official Perl or pymteval is not at hand).
`nlg score` runs with a fresh cache directory: its first run loads METEOR's full paraphrase table
and caches the cut of it for these references ("cold", reported on its own); the timed runs use
that cache ("warm", the usual case when scoring system after system on one test set).
Prints wall and CPU times (CPU: the process and its children, JVMs and Perl included), the
ratios, and whether both sides report the same scores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NLG_SHARED_DIR", REPO.parent / "shared")).resolve()
NAMES = ("BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr")


def template_output(mr: str) -> str:
    """A crude realisation of `name : X | Type : pub | ...`: the predictions scored here, and
    those whose scores tests/metrics/test_e2e.py pins."""
    fields = dict(part.split(" : ", 1) for part in mr.split(" | "))
    text = f"{fields.get('name', 'It')} is a {fields.get('Type', 'place')}"
    if "food" in fields:
        text += f" serving {fields['food']} food"
    if "area" in fields:
        text += f" in the {fields['area']}"
    if "near" in fields:
        text += f" near {fields['near']}"
    text += " ."
    if "price" in fields:
        text += f" Its price range is {fields['price']} ."
    if "customer rating" in fields:
        text += f" It has a {fields['customer rating']} customer rating ."
    return text


def e2e_groups(test_txt: Path) -> dict[str, list[str]]:
    """The references of each distinct MR of an E2E `mr||ref` file, in first-occurrence order."""
    groups: dict[str, list[str]] = {}
    for line in test_txt.read_text(encoding="utf-8").splitlines():
        mr, ref = line.split("||", 1)
        groups.setdefault(mr.strip(), []).append(ref.strip())
    return groups


def write_e2e_files(test_txt: Path, out_dir: Path) -> tuple[Path, Path, int, int]:
    """REF (references grouped per distinct MR, first-occurrence order) and template PRED."""
    groups = e2e_groups(test_txt)
    ref_path, pred_path = out_dir / "e2e_ref.txt", out_dir / "e2e_pred.txt"
    ref_path.write_text(
        "".join("\n".join(refs) + "\n\n" for refs in groups.values()), encoding="utf-8"
    )
    pred_path.write_text("".join(template_output(mr) + "\n" for mr in groups), encoding="utf-8")
    return ref_path, pred_path, len(groups), sum(map(len, groups.values()))


def parse_report(text: str) -> dict[str, float]:
    return {
        name: float(value)
        for name, value in re.findall(r"^(\w+): ([0-9.]+)$", text, re.M)
        if name in NAMES
    }


def timed(
    command: list[str], cwd: Path | None = None, env: dict[str, str] | None = None
) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (the process and its children: JVMs, Perl) and its stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(command)}\n{done.stderr[-3000:]}")
    return seconds, cpu, done.stdout


def stock_baseline(ref_path: str, pred_path: str, pymteval: bool) -> None:
    """The official pipeline from stock pycocoevalcap, sequential; prints the SCORES report."""
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    sys.path.insert(0, str(REPO))  # also from a checkout that is not installed
    from nlg.metrics.e2e import format_scores, read_predictions, read_references
    from nlg.metrics.mteval import bleu_nist

    refs, preds = read_references(ref_path), read_predictions(pred_path)
    gts = {i: [{"caption": ref} for ref in group] for i, group in enumerate(refs)}
    res = {i: [{"caption": pred}] for i, pred in enumerate(preds)}
    tokenizer = PTBTokenizer()
    gts, res = tokenizer.tokenize(gts), tokenizer.tokenize(res)  # two Java runs, as the official
    scores = {}
    for name, scorer in (("METEOR", Meteor()), ("ROUGE_L", Rouge()), ("CIDEr", Cider())):
        scores[name] = float(scorer.compute_score(gts, res)[0])
    scores["BLEU"], scores["NIST"] = bleu_nist(refs, preds, pymteval)
    print(format_scores(scores))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--official", default=os.environ.get("E2E_METRICS_DIR"), help="an e2e-metrics checkout"
    )
    parser.add_argument(
        "-p", "--pymteval", action="store_true", help="BLEU/NIST as the official -p, on both sides"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per side; the fastest counts")
    parser.add_argument(
        "--stock-baseline", nargs=2, metavar=("REF", "PRED"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.stock_baseline:
        stock_baseline(*args.stock_baseline, args.pymteval)
        return 0

    test_txt = SHARED / "data" / "e2e" / "test.txt"
    if not test_txt.is_file():
        sys.exit(f"E2E test data not found at {test_txt} (set NLG_SHARED_DIR)")
    flag = ["-p"] if args.pymteval else []
    with tempfile.TemporaryDirectory() as tmp:
        ref, pred, n_inst, n_refs = write_e2e_files(test_txt, Path(tmp))
        ours_cmd = [sys.executable, "-m", "nlg.score", str(ref), str(pred), *flag]
        if args.official:
            base_name = f"official measure_scores.py ({args.official})"
            script = Path(args.official).resolve() / "measure_scores.py"
            base_cmd, base_cwd = (
                [sys.executable, str(script), str(ref), str(pred), *flag],
                script.parent,
            )
        else:
            base_name = "stock pycocoevalcap pipeline + our BLEU/NIST, sequential"
            base_cmd, base_cwd = (
                [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    *flag,
                    "--stock-baseline",
                    str(ref),
                    str(pred),
                ],
                None,
            )
        print(
            f"E2E test set: {n_inst} instances, {n_refs} references; template predictions; "
            f"BLEU/NIST {'pymteval (-p)' if args.pymteval else 'mteval-v13a'}; {os.cpu_count()} CPUs"
        )
        env = {**os.environ, "NLG_CACHE_DIR": str(Path(tmp) / "cache")}
        cold_wall, cold_cpu, _ = timed(ours_cmd, REPO, env)
        runs: dict[str, list[tuple[float, float]]] = {"ours": [], "base": []}
        for _ in range(args.repeat):  # alternate, so that machine load hits both sides alike
            wall, cpu, ours = timed(ours_cmd, REPO, env)
            runs["ours"].append((wall, cpu))
            wall, cpu, base = timed(base_cmd, base_cwd)
            runs["base"].append((wall, cpu))
    ours, base = parse_report(ours), parse_report(base)
    best = {side: min(runs[side]) for side in runs}  # the fastest wall time, with its CPU time
    print(
        f"nlg score, first run (builds its cache): {cold_wall:6.2f} s wall, {cold_cpu:6.2f} s CPU"
    )
    for side, label in (("ours", "nlg score"), ("base", "baseline ")):
        walls = ", ".join(f"{wall:.2f}" for wall, _ in runs[side])
        print(f"{label}: {best[side][0]:6.2f} s wall, {best[side][1]:6.2f} s CPU   (runs: {walls})")
    print(f"baseline: {base_name}")
    wall_ratio, cpu_ratio = (best["ours"][i] / best["base"][i] for i in (0, 1))
    print(f"ratio nlg/baseline: wall {wall_ratio:.2f} (x{1 / wall_ratio:.2f}), CPU {cpu_ratio:.2f}")
    same = (
        all(abs(ours[k] - base[k]) < 1e-9 for k in NAMES)
        if set(ours) == set(base) == set(NAMES)
        else False
    )
    print(f"scores {'agree' if same else 'DIFFER'}: nlg {json.dumps(ours)}")
    if not same:
        print(f"                baseline {json.dumps(base)}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
