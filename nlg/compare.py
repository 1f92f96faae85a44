"""`nlg compare`: each system's scores with bootstrap intervals, and whether two systems differ.

    nlg compare REFS PRED_A [PRED_B] [--resamples 1000] [--seed 1] [--json FILE]
    nlg compare RUN_A RUN_B              # two run directories: subset by subset (run.json)
    nlg compare RUN                      # a demo run: its untrained model (A) against it (B)

REFS and PRED as for `nlg score` (the suite, -m, -nr, -nc/-nw/-b and -p mean what they mean
there). For every metric of the suite this reports each system's score on the full set, its 95 %
bootstrap percentile interval and, for two systems, the difference B - A, its interval and a
paired bootstrap p-value.

Resampling (Koehn 2004, paired bootstrap resampling): a resample draws n instances with
replacement from the n test instances (E2E: a context with all its references; WebNLG/DART: an
instance with its references), the same draws for both systems; R resamples (`--resamples`,
default 1,000) from numpy's default generator seeded with `--seed`. Each resample's value is the
suite's corpus score of that resampled corpus, as `nlg score` would report it for the corpus
written out as files (nlg.metrics.resample: corpus statistics such as NIST's information weights,
CIDEr's document frequencies and METEOR's aggregate are recomputed per resample).

Interval: the 2.5th and 97.5th percentiles of the R values (numpy's linear interpolation).
p-value: two-sided, with the bootstrap distribution of the difference shifted to mean 0 as the
distribution under "no difference" (Efron & Tibshirani 1993, ch. 16):
    delta = B - A on the full set, delta_r = B - A on resample r, mean = (1/R) sum_r delta_r,
    p = (1 + #{r : |delta_r - mean| >= |delta|}) / (R + 1).
A system against itself has delta = delta_r = 0, so p = 1 exactly; the smallest p that R
resamples can give is 1 / (R + 1) (0.000999 for 1,000).

A run directory holds run.json (written by scripts/reproduce.sh): its `dataset` chooses the
suite (e2e, else webnlg), and `subsets` names per subset the `references` and `predictions`
(relative to the directory); the subsets both runs have are compared, with the same references.
One run directory alone compares its `untrained` subsets (demo runs score the untrained model
too; A) with its `subsets` (B).

`--json FILE` writes {"settings": {...}, "p_value": "...", "comparisons": [{"subset", "suite",
"references", "systems", "sha256", "instances", "unavailable", "metrics": {NAME: {"systems":
[{"score", "low", "high"}, ...], "difference": {"value", "low", "high", "p"} (two systems)}}}]}.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nlg.cli import run_main, spellings
from nlg.files import Failure, InputError, atomic_files, check_outputs, read_json, sha256_file
from nlg.metrics import SUITES, print_notes, suite
from nlg.metrics.resample import resamplers
from nlg.score import add_webnlg_options, infer_suite, suite_options

CONFIDENCE = 0.95
P_VALUE = (
    "two-sided paired bootstrap: p = (1 + #{r: |d_r - mean(d)| >= |d|}) / (R + 1), d = B - A on "
    "the full set, d_r on resample r"
)


@dataclass
class Corpus:
    """What one comparison scores: references, each system's outputs, and where they came from."""

    subset: str | None
    suite: str
    references: list[list[str]]
    systems: list[list[str]]
    ref_path: Path
    pred_paths: list[Path]
    read_options: dict


# ---------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------


def draws(n: int, resamples: int, seed: int) -> np.ndarray:
    """The resamples: row r holds the n instance indices of resample r, drawn with replacement."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def interval(samples: np.ndarray) -> tuple[float, float]:
    """The central CONFIDENCE percentile interval of bootstrap values."""
    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)


def p_value(delta: float, deltas: np.ndarray) -> float:
    """The paired bootstrap p-value of an observed difference (module docstring)."""
    extreme = np.abs(deltas - deltas.mean()) >= abs(delta)
    return float((1 + np.count_nonzero(extreme)) / (len(deltas) + 1))


def compare_values(full: list[float], samples: list[np.ndarray]) -> dict:
    """Scores with intervals for one metric (one or two systems) and, for two, the difference."""
    out: dict = {
        "systems": [
            dict(zip(("score", "low", "high"), (value, *interval(values)), strict=True))
            for value, values in zip(full, samples, strict=True)
        ]
    }
    if len(full) == 2:
        delta, deltas = full[1] - full[0], samples[1] - samples[0]
        low, high = interval(deltas)
        out["difference"] = {"value": delta, "low": low, "high": high, "p": p_value(delta, deltas)}
    return out


def compare(corpus: Corpus, options: dict, resamples: int, seed: int) -> dict:
    """One comparison: every metric's scores, intervals and (two systems) difference."""
    n = len(corpus.references)
    idx = draws(n, resamples, seed)
    with resamplers(corpus.suite, corpus.references, corpus.systems, **options) as made:
        full = made.values(np.arange(n)[None, :])
        boot = made.values(idx)
    metrics = {
        name: compare_values([float(f[name][0]) for f in full], [b[name] for b in boot])
        for name in made.metrics
    }
    return {
        "subset": corpus.subset,
        "suite": corpus.suite,
        "references": str(corpus.ref_path),
        "systems": [str(path) for path in corpus.pred_paths],
        "sha256": {str(p): sha256_file(p) for p in input_files(corpus)},
        "instances": n,
        "unavailable": ({"metrics": list(made.missing), "why": made.unavailable}
                        if made.missing else None),
        "notes": made.notes,
        "metrics": metrics,
    }


def input_files(corpus: Corpus) -> list[Path]:
    """Every file the comparison read: the reference file(s) and the predictions."""
    refs = [corpus.ref_path]
    if corpus.suite == "webnlg":
        refs = suite("webnlg").reference_files(corpus.ref_path, corpus.read_options.get("num_refs"))
    return [*refs, *corpus.pred_paths]


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------


def read_corpus(
    suite_name: str, ref: Path, preds: Sequence[Path], read_options: dict, subset: str | None
) -> Corpus:
    """References and each system's outputs; the systems must pair with the same references."""
    module = suite(suite_name)
    references, systems = None, []
    for pred in preds:
        refs, hyps = module.read_files(ref, pred, **read_options)
        if references is not None and refs != references:
            first = next(i for i, (a, b) in enumerate(zip(refs, references, strict=False)) if a != b)
            raise InputError(
                f"{pred} and {preds[0]} pair with different references (instance {first + 1}: "
                f"{refs[first]!r} vs {references[first]!r}); give both in the same order"
            )
        references = refs
        systems.append(hyps)
    return Corpus(subset, suite_name, references, systems, ref, list(preds), read_options)


def read_run(folder: Path) -> dict:
    """A run directory's run.json (its `dataset` and `subsets` are what compare reads)."""
    path = folder / "run.json"
    if not path.is_file():
        raise InputError(
            f"{path}: no such file (a run directory of scripts/reproduce.sh holds run.json, "
            "written when its score stage ends)"
        )
    record = read_json(path)
    if not isinstance(record, dict) or not isinstance(record.get("dataset"), str):
        raise InputError(f"{path}: needs \"dataset\" (a name) and \"subsets\" (an object)")
    subset_files(folder, record, "subsets")
    return record


def subset_files(folder: Path, record: dict, key: str) -> dict[str, tuple[Path, Path]]:
    """(references, predictions) per subset of run.json's `key` ("subsets" or "untrained"),
    each checked to exist."""
    path, subsets = folder / "run.json", record.get(key)
    if not isinstance(subsets, dict):
        raise InputError(f"{path}: \"{key}\" is {json.dumps(subsets)}, not an object of subsets")
    out = {}
    for name, entry in subsets.items():
        files = []
        for field_name in ("references", "predictions"):
            value = entry.get(field_name) if isinstance(entry, dict) else None
            if not isinstance(value, str):
                raise InputError(f"{path}: {key}.{name}.{field_name} is missing or not a path")
            if not (folder / value).exists():
                raise InputError(
                    f"{path}: {key}.{name}.{field_name} names {folder / value}, which does not "
                    "exist"
                )
            files.append(folder / value)
        out[name] = (files[0], files[1])
    return out


def run_corpora(
    sides: Sequence[tuple[str, dict[str, tuple[Path, Path]]]], dataset: str, read_options: dict
) -> list[Corpus]:
    """The subsets both sides (a label and its subsets' files) have, each compared on the same
    references."""
    (label_a, a), (label_b, b) = sides
    suite_name = "e2e" if dataset == "e2e" else "webnlg"
    if suite_name == "e2e":
        read_options = {}  # -nr is refused for e2e with the other scoring options
    common = [name for name in a if name in b]
    if not common:
        raise InputError(
            f"{label_a} and {label_b} have no subset in common ({', '.join(a)} vs {', '.join(b)})"
        )
    for name in [*a, *b]:
        if name not in common:
            print(f"note: subset {name!r} is on one side only; not compared", file=sys.stderr)
    module, corpora = suite(suite_name), []
    for name in common:
        (ref_a, pred_a), (ref_b, pred_b) = a[name], b[name]
        if module.read_files(ref_a, pred_a, **read_options)[0] != module.read_files(
            ref_b, pred_b, **read_options
        )[0]:
            raise InputError(
                f"subset {name}: the runs have different references ({ref_a} vs {ref_b}); "
                "a paired comparison needs the same test instances"
            )
        corpora.append(read_corpus(suite_name, ref_a, [pred_a, pred_b], read_options, name))
    return corpora


def two_runs(run_a: Path, run_b: Path, read_options: dict) -> list[Corpus]:
    """Run A against run B, subset by subset."""
    a, b = read_run(run_a), read_run(run_b)
    if a["dataset"] != b["dataset"]:
        raise InputError(
            f"{run_a}/run.json is dataset {a['dataset']!r} but {run_b}/run.json is "
            f"{b['dataset']!r}"
        )
    sides = [(f"{run}/run.json", subset_files(run, record, "subsets"))
             for run, record in ((run_a, a), (run_b, b))]
    return run_corpora(sides, a["dataset"], read_options)


def trained_against_untrained(run: Path, read_options: dict) -> list[Corpus]:
    """A demo run's untrained model (A) against its trained one (B), subset by subset."""
    record = read_run(run)
    if record.get("untrained") is None:
        raise InputError(
            f"{run}/run.json: \"untrained\" is null (only demo runs score the untrained model); "
            "give two run directories to compare"
        )
    sides = [("untrained", subset_files(run, record, "untrained")),
             ("subsets", subset_files(run, record, "subsets"))]
    return run_corpora(sides, record["dataset"], read_options)


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nlg compare",
        description="Bootstrap 95% intervals of each system's scores and a paired bootstrap "
        "p-value for the difference of two systems, for every metric of the suite.",
    )
    parser.add_argument("inputs", nargs="+", metavar="PATH",
                        help="REFS PRED_A [PRED_B] (as for nlg score), RUN_A RUN_B (run "
                        "directories with run.json), or RUN (its untrained model against it)")
    parser.add_argument("--suite", choices=sorted(SUITES), help="default: inferred from REFS")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (1000)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the resampling (1)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument(*spellings("no_cache"), dest="no_cache", action="store_true",
                        help="neither use nor build the cached cut of METEOR's paraphrase table")
    parser.add_argument("--strict", action="store_true",
                        help="fail (exit 1) unless every metric can be computed")
    parser.add_argument("-p", "--python", "--pymteval", dest="pymteval", action="store_true",
                        help="e2e: BLEU/NIST like the official script's -p")
    add_webnlg_options(parser, default_metrics=None)
    parser.set_defaults(per_instance=None)  # nlg score's option; compare has none
    return parser


# The scoring options a scores file records ("scored"."options", nlg score) -> compare's flags.
RECORDED_FLAGS = {"pymteval": "pymteval", "num_refs": "num_refs", "metrics": "metrics",
                  "char_order": "ncorder", "word_order": "nworder", "beta": "beta"}


def recorded_options(folders: Sequence[Path]) -> dict | None:
    """The scoring options (-p, -nr, -m, chrF++'s orders) that the runs' scores files were made
    with, read from each file's "scored" record, so that comparing run directories computes the
    very numbers their scores files hold (E2E runs are scored with -p, which changes NIST).
    None when no scores file records them (the runs are then read and checked as usual); files
    scored with different options cannot all be matched: refused, naming two of them."""
    found: dict[Path, dict] = {}
    for folder in folders:
        record = read_run(folder)
        for key in ("subsets", "untrained"):
            entries = record.get(key)
            for entry in entries.values() if isinstance(entries, dict) else ():
                scores = entry.get("scores") if isinstance(entry, dict) else None
                if not isinstance(scores, str) or not (folder / scores).is_file():
                    continue
                scored = read_json(folder / scores)
                scored = scored.get("scored") if isinstance(scored, dict) else None
                if isinstance(scored, dict) and isinstance(scored.get("options"), dict):
                    found[folder / scores] = scored["options"]
    distinct = {json.dumps(options, sort_keys=True): path for path, options in found.items()}
    if len(distinct) > 1:
        (first, a), (second, b) = list(distinct.items())[:2]
        raise InputError(f"{a} was scored with {first} but {b} with {second}: give the scoring "
                         "options to compare with (-p, -nr, -m, ...)")
    return next(iter(found.values()), None)


def take_recorded_options(args: argparse.Namespace, folders: Sequence[Path]) -> bool:
    """Unless the command line gives scoring options itself, use those the runs were scored
    with (`recorded_options`). False when there were none to take."""
    if any(getattr(args, flag, None) not in (None, False) for flag in RECORDED_FLAGS.values()):
        return True
    recorded = recorded_options(folders)
    for option, value in (recorded or {}).items():
        if option in RECORDED_FLAGS:
            setattr(args, RECORDED_FLAGS[option], value)
    return recorded is not None


NO_RECORD = "note: no scores file of these runs records its scoring options; comparing with the defaults"


def _instances(folder: Path, entry: dict) -> tuple[int | None, str | None, str]:
    """(instances, references_sha256) of one subset entry of run.json, from its scores file's
    "scored" record where it has one, else (the predictions' line count, None); and what was
    counted, for the message."""
    if not isinstance(entry, dict) or not isinstance(entry.get("predictions"), str):
        return None, None, ""  # refused with its own line when the subset is read
    scores = entry.get("scores")
    if isinstance(scores, str) and (folder / scores).is_file():
        scored = read_json(folder / scores)
        scored = scored.get("scored") if isinstance(scored, dict) else None
        if isinstance(scored, dict) and isinstance(scored.get("instances"), int):
            return scored["instances"], scored.get("references_sha256"), str(folder / scores)
    predictions = folder / entry["predictions"]
    if predictions.is_file():
        with open(predictions, "rb") as handle:
            return sum(1 for _ in handle), None, f"{predictions} (lines)"
    return None, None, str(predictions)


def check_basic_differences(folders: Sequence[Path]) -> None:
    """Refuse runs that are not comparable at all, most basic difference first, before any
    scoring option is judged: another dataset (and so suite), then another number of test
    instances or other references in a subset both sides have. The scoring options
    (`recorded_options`) come after these."""
    records = [read_run(folder) for folder in folders]
    if len(folders) == 2:
        (run_a, a), (run_b, b) = zip(folders, records, strict=True)
        if a["dataset"] != b["dataset"]:
            suites = ["e2e" if r["dataset"] == "e2e" else "webnlg" for r in (a, b)]
            raise InputError(
                f"{run_a}/run.json is dataset {a['dataset']!r} but {run_b}/run.json is "
                f"{b['dataset']!r}" + (f" (scored by the {suites[0]} and {suites[1]} suites)"
                                       if suites[0] != suites[1] else "")
                + ": not one test set; compare runs of one dataset"
            )
        sides = [(run_a, a["subsets"]), (run_b, b["subsets"])]
    else:
        folder, record = folders[0], records[0]
        if not isinstance(record.get("untrained"), dict):
            return  # refused with its own line in trained_against_untrained
        sides = [(folder, record["untrained"]), (folder, record["subsets"])]
    (folder_a, a), (folder_b, b) = sides
    for name in [n for n in a if n in b]:
        (count_a, refs_a, where_a), (count_b, refs_b, where_b) = (
            _instances(folder_a, a[name]), _instances(folder_b, b[name]))
        if count_a is not None and count_b is not None and count_a != count_b:
            raise InputError(f"subset {name}: {where_a} has {count_a} instances but {where_b} "
                             f"{count_b}: not one test set")
        if refs_a and refs_b and refs_a != refs_b:
            raise InputError(f"subset {name}: {where_a} and {where_b} were scored against other "
                             "references (references_sha256 differs): not one test set")


def corpora_of(args: argparse.Namespace) -> tuple[list[Corpus], str]:
    """What to compare, from the positional arguments, and the suite."""
    paths = [Path(p) for p in args.inputs]
    runs = len(paths) in (1, 2) and all(path.is_dir() for path in paths)
    if runs:
        check_basic_differences(paths)  # dataset, test instances: before the scoring options
    recorded = take_recorded_options(args, paths) if runs else True
    read_options = {"num_refs": args.num_refs} if args.num_refs is not None else {}
    if len(paths) == 1 and paths[0].is_dir():  # one run: its untrained model against it
        corpora = trained_against_untrained(paths[0], read_options)
    elif len(paths) == 2 and paths[1].is_dir():  # PRED_A is never a folder: two runs
        if not paths[0].is_dir():
            raise InputError(f"{paths[0]}: not a run directory (the second is {paths[1]})")
        corpora = two_runs(paths[0], paths[1], read_options)
    if runs:
        if not recorded:
            print(NO_RECORD, file=sys.stderr)
        return corpora, corpora[0].suite
    if len(paths) not in (2, 3):
        raise InputError(
            f"expected REFS PRED_A [PRED_B], RUN_A RUN_B or RUN, got {len(paths)} paths"
        )
    for path in paths[1:]:
        if not path.is_file():
            raise InputError(f"{path}: no such file")
    suite_name = args.suite or infer_suite(paths[0])
    read_options = {}
    if suite_name == "webnlg" and args.num_refs is not None:
        read_options["num_refs"] = args.num_refs
    return [read_corpus(suite_name, paths[0], paths[1:], read_options, None)], suite_name


def scoring_options(args: argparse.Namespace, suite_name: str) -> dict:
    """The options of `nlg score` for this suite, as `resamplers` takes them."""
    options = suite_options(args, suite_name)
    options.pop("per_instance", None)
    options.pop("num_refs", None)
    return options


def fmt(name: str, suite_name: str, value: float, digits: int | None = None) -> str:
    """A score as printed: 2 decimals for GenerationEval's BLEU (0..100), else 4, or `digits`."""
    if digits is None:
        digits = 2 if suite_name == "webnlg" and name == "BLEU" else 4
    return f"{value:.{digits}f}"


def row_digits(name: str, suite_name: str, entry: dict) -> int:
    """The decimals of one metric's row: fmt's, or more where they would show the two systems'
    different scores alike, or a difference that is not 0 as 0 (nlg.results.stats)."""
    from nlg.results.stats import digits_keeping_order

    start = 2 if suite_name == "webnlg" and name == "BLEU" else 4
    values = [s["score"] for s in entry["systems"]]
    digits = digits_keeping_order(values, start)
    if "difference" in entry and entry["difference"]["value"] != 0:
        digits = max(digits, digits_keeping_order([entry["difference"]["value"], 0.0], start))
    return digits


def format_comparison(result: dict, resamples: int, seed: int) -> str:
    """The printed table of one comparison."""
    two = len(result["systems"]) == 2
    where = f"subset {result['subset']}: " if result["subset"] else ""
    lines = [
        f"{where}{result['instances']} instances, {resamples} paired resamples (seed {seed}), "
        f"{CONFIDENCE:.0%} percentile intervals",
        *(f"{label} = {path}" for label, path in zip("AB", result["systems"], strict=False)),
    ]
    rows = [["metric", "A", *(["B", "B - A", "p"] if two else [])]]
    for name, entry in result["metrics"].items():
        row, digits = [name], row_digits(name, result["suite"], entry)

        def shown(value: float, name: str = name, digits: int = digits) -> str:
            return fmt(name, result["suite"], value, digits)

        for s in entry["systems"]:
            row.append(f"{shown(s['score'])} [{shown(s['low'])}, {shown(s['high'])}]")
        if two:
            d = entry["difference"]
            row.append(f"{shown(d['value'])} [{shown(d['low'])}, {shown(d['high'])}]")
            row.append(f"{d['p']:.4f}")
        rows.append(row)
    for name in (result["unavailable"] or {}).get("metrics", []):
        rows.append([name, "n/a", *(["n/a", "n/a", "n/a"] if two else [])])
    widths = [max(len(row[k]) for row in rows) for k in range(len(rows[0]))]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
              for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.resamples < 1:
        raise InputError(f"--resamples must be at least 1, not {args.resamples}")
    corpora, suite_name = corpora_of(args)
    if args.json:
        check_outputs(
            inputs={"input": [p for c in corpora for p in input_files(c)]},
            outputs={"--json": args.json},
        )
    options = scoring_options(args, suite_name)
    try:
        results = [compare(c, dict(options), args.resamples, args.seed) for c in corpora]
    except RuntimeError as error:  # MissingJavaError, or Java failing under us
        raise Failure(str(error)) from None
    if args.json:
        scoring = {k: v for k, v in options.items() if k != "cache_dir"}  # not a setting
        settings = {"suite": suite_name, "resamples": args.resamples, "seed": args.seed,
                    "confidence": CONFIDENCE, "options": scoring}
        report = {"settings": settings, "p_value": P_VALUE, "comparisons": results}
        with atomic_files() as open_file:
            open_file(args.json).write(json.dumps(report, indent=2) + "\n")
    print("\n\n".join(format_comparison(r, args.resamples, args.seed) for r in results))
    for result in results:
        if result["unavailable"]:
            missing = ", ".join(result["unavailable"]["metrics"])
            print(f"warning: {missing} not computed: {result['unavailable']['why']} "
                  "(--strict makes this an error)", file=sys.stderr)
        print_notes(result["notes"])
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
