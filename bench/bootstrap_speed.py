"""Wall time of `nlg compare` (1,000 paired bootstrap resamples, two systems) beside one `nlg score`.

    python bench/bootstrap_speed.py [--dataset e2e|webnlg|both] [--resamples 1000]

E2E: the test set (630 contexts, 4,693 references) written as bench/score_speed.py writes it;
system A the template realisation of each MR, system B each context's first reference.
WebNLG: the 2017 test set (1,862 instances, 6 reference files) written as
bench/webnlg_score_speed.py writes it (tokenised as the paper's decoder writes); system A the
template realisation of the triples, system B the same with the triples in reverse order.
Every command runs as a fresh process (imports and JVM starts included) with a METEOR cache that
a first, untimed `nlg score` fills, as when scoring system after system. Prints wall and CPU
seconds (the process and its children) of `nlg score REF A` and of
`nlg compare REF A B --resamples N`, all metrics of the suite.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from score_speed import REPO, SHARED, e2e_groups, timed, write_e2e_files  # noqa: E402
from webnlg_score_speed import paper_tokenize, template, write_test_set  # noqa: E402


def e2e_files(folder: Path) -> tuple[Path, Path, Path]:
    ref, pred, _, _ = write_e2e_files(SHARED / "data" / "e2e" / "test.txt", folder)
    second = folder / "e2e_first_ref.txt"
    groups = e2e_groups(SHARED / "data" / "e2e" / "test.txt")
    second.write_text("".join(refs[0] + "\n" for refs in groups.values()), encoding="utf-8")
    return ref, pred, second


def webnlg_files(folder: Path) -> tuple[Path, Path, Path]:
    xml = SHARED / "data" / "webnlg-2017" / "test" / "testdata_with_lex.xml"
    write_test_set(xml, folder, raw=False)
    refs = folder / "nl"
    second = folder / "reversed_template"
    lines = [
        paper_tokenize(template([t.text for t in entry.iter("mtriple")][::-1]))
        for entry in ET.parse(xml).getroot().iter("entry")
    ]
    second.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return refs, refs / "hypothesis", second


def bench(name: str, ref: Path, a: Path, b: Path, resamples: int, env: dict) -> None:
    score = [sys.executable, "-m", "nlg", "score", str(ref), str(a)]
    compare = [sys.executable, "-m", "nlg", "compare", str(ref), str(a), str(b)]
    compare += ["--resamples", str(resamples)]
    timed(score, REPO, env)  # fills the METEOR cache
    score_wall, score_cpu, _ = timed(score, REPO, env)
    wall, cpu, out = timed(compare, REPO, env)
    print(f"{name}: nlg score (one system):        {score_wall:7.2f} s wall, {score_cpu:7.2f} s CPU")
    print(f"{name}: nlg compare ({resamples} resamples, 2 systems): "
          f"{wall:7.2f} s wall, {cpu:7.2f} s CPU")
    print(out)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", choices=("e2e", "webnlg", "both"), default="both")
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "NLG_CACHE_DIR": str(Path(tmp) / "cache"), "PYTHONPATH": str(REPO)}
        if args.dataset in ("e2e", "both"):
            (Path(tmp) / "e2e").mkdir()
            bench("E2E", *e2e_files(Path(tmp) / "e2e"), args.resamples, env)
        if args.dataset in ("webnlg", "both"):
            (Path(tmp) / "webnlg").mkdir()
            bench("WebNLG", *webnlg_files(Path(tmp) / "webnlg"), args.resamples, env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
