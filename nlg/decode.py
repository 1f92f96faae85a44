"""Predictions -> the reference and prediction files a dataset's scorer reads.

    nlg decode --sample_file predict.jsonl --input_file data/e2e/test_formatted.jsonl
               --output_ref_file e2e_ref.txt --output_pred_file e2e_pred.txt
               [--ref_type e2e|webnlg|dart] [--ref_num N] [--filter all|seen|unseen]
               [--tokenize] [--lower] [--vocab DIR] [--allow_subset]

The same files as the LoRA paper's `gpt2_decode.py`. For each distinct context of
--input_file, in order of first occurrence, its references (every line with that context
string) and its prediction; the dataset named by --ref_type writes them (nlg/datasets):

  e2e           --output_ref_file: the references of each context one per line, then an
                empty line; --output_pred_file: one prediction per line
  webnlg, dart  --output_ref_file is a folder of reference0 .. reference{N-1} (N = --ref_num,
                default the paper's 6), one line per context each: a context's k-th
                reference, or its first when it has fewer (references past the N-th are left
                out, with a warning); --output_pred_file: one prediction per line

--filter seen|unseen keeps the contexts whose WebNLG category was (not) seen in training
(the formatted file's `cate`), as the paper's --filter does; predictions for the others are
not used.

A reference is the formatted completion, and a prediction the decoded `predict` ids, both cut
at the first "<|endoftext|>" and then at the first blank line ("\\n\\n"), and stripped.
--lower lower-cases, then --tokenize splits off every non-word character (the paper's
regular expression `(\\W)`, not nltk) and joins the pieces with single spaces.

Where the paper's script writes silently wrong files (or crashes) we stop with an error instead:

  * every prediction must name a line of --input_file (`id`, 0-based), and its `context` ids
    must decode to that line's context text (records without `context`, as the paper's
    beam script writes them, are matched by id alone);
  * every distinct context (of the --filter subset) needs a prediction; a prediction file
    covering only some of them is an error giving the counts, unless --allow_subset, which
    writes references for the predicted contexts only (scoring 200 predictions against 630
    reference groups is how one gets BLEU 5 and NIST 0; the paper's script crashes);
  * a prediction containing a line break would shift every later line of the prediction
    file, so line breaks inside one text become spaces; an empty reference would end its
    group early in e2e_ref.txt, so it is an error naming FILE:LINE;
  * --filter on a file without `cate` (E2E, DART) is an error naming the line.

Several predictions for the same context (the paper's files have one per line): the last
one in the file wins, as in the paper's script. All outputs are written atomically, together.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from nlg import datasets
from nlg.cli import run_main, spellings
from nlg.datasets import Decoded
from nlg.datasets.recipe import SUBSETS
from nlg.files import InputError, check_outputs, read_jsonl
from nlg.pairs import TextPair, load_formatted

EOS_TEXT = "<|endoftext|>"  # nlg.tokenizer.EOS, written out: tiktoken is imported only once decoding runs
SHOWN = 3  # examples quoted in an error message


def cut(text: str) -> str:
    """Text up to the first <|endoftext|> and the first blank line, stripped."""
    return text.split(EOS_TEXT)[0].split("\n\n")[0].strip()


def one_line(text: str) -> str:
    """Line breaks (every kind Python's str.splitlines knows) become single spaces."""
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def standard_tokenize(text: str) -> str:
    """The paper's tokenisation: every non-word character becomes its own space-separated token."""
    return " ".join(" ".join(re.split(r"(\W)", text)).split())


def post_process(text: str, tokenize: bool = False, lower: bool = False) -> str:
    if lower:
        text = text.lower()
    if tokenize:
        text = standard_tokenize(text)
    return text


@dataclass(frozen=True)
class Prediction:
    id: int  # 0-based line of the formatted/encoded data
    context: list[int] | None  # None in the paper's own prediction files
    predict: list[int]
    line: int  # line number in the prediction file


def read_predictions(path: str | Path, vocab_size: int, records: list | None = None) -> list[Prediction]:
    """Records of a beam output file (`records`: its read_jsonl, if read already); malformed ones
    are errors naming FILE:LINE."""
    predictions = []
    for number, record in read_jsonl(path) if records is None else records:
        where = f"{path}:{number}"
        if not isinstance(record, dict) or "id" not in record or "predict" not in record:
            raise InputError(f"{where}: expected an object with keys id and predict (and context)")
        if type(record["id"]) is not int:
            raise InputError(f"{where}: id must be an integer, got {record['id']!r}")
        ids = {}
        for key in ("context", "predict"):
            value = record.get(key)
            if value is None and key == "context":
                continue
            if not isinstance(value, list) or not all(type(t) is int and 0 <= t < vocab_size for t in value):
                raise InputError(f"{where}: {key} must be a list of token ids in [0, {vocab_size})")
            ids[key] = value
        predictions.append(Prediction(record["id"], ids.get("context"), ids["predict"], number))
    return predictions


def context_ids_text(ids: list[int], tokenizer) -> str:
    """The text of a context's ids, without the trailing 50256 that ends every context."""
    while ids and ids[-1] == tokenizer.eos_id:
        ids = ids[:-1]
    return tokenizer.decode(ids).strip()


def match_predictions(pairs, predictions: list[Prediction], tokenizer, input_file: str,
                      sample_file: str) -> dict[str, Prediction]:
    """Each prediction checked against its line of the formatted data; keyed by context text."""
    bad, by_context, seen_ids = [], {}, {}
    for p in predictions:
        where = f"{sample_file}:{p.line}"
        if not 0 <= p.id < len(pairs):
            bad.append(f"{where}: id {p.id} is not a line of {input_file} (0..{len(pairs) - 1})")
            continue
        if p.id in seen_ids:
            bad.append(f"{where}: id {p.id} already predicted at line {seen_ids[p.id]}")
            continue
        seen_ids[p.id] = p.line
        text = pairs[p.id].context
        if p.context is not None and context_ids_text(p.context, tokenizer) != text.strip():
            bad.append(f"{where}: context decodes to {context_ids_text(p.context, tokenizer)!r}, but "
                       f"line {p.id} of {input_file} has {text!r}")
            continue
        by_context[text] = p  # the last prediction of a context wins, as in the paper's script
    if bad:
        raise InputError(f"{len(bad)} of {len(predictions)} predictions in {sample_file} do not match "
                         f"{input_file} (is it the file the predictions were made from?):\n  "
                         + "\n  ".join(bad[:SHOWN]) + ("\n  ..." if len(bad) > SHOWN else ""))
    return by_context


def kept(pair: TextPair, subset: str, input_file: str) -> bool:
    """Whether `pair` belongs to the --filter subset (all, seen or unseen categories)."""
    if subset == "all":
        return True
    if pair.cate is None:
        raise InputError(f"{input_file}:{pair.line}: no \"cate\" (seen category) on this line, so "
                         f"--filter {subset} cannot tell; it applies to WebNLG files only")
    return pair.cate == (subset == "seen")


def build_decoded(pairs: list[TextPair], by_context: dict[str, Prediction], tokenizer, *, tokenize: bool = False,
                  lower: bool = False, allow_subset: bool = False, subset: str = "all",
                  input_file: str = "input", sample_file: str = "predictions") -> Decoded:
    """References grouped by context string and one prediction per context, in input order."""
    groups: dict[str, list[str]] = {}
    for pair in pairs:
        if not kept(pair, subset, input_file):
            continue
        reference = one_line(cut(pair.completion))
        if not reference:
            raise InputError(f"{input_file}:{pair.line}: empty reference (after cutting at "
                             f"{EOS_TEXT!r} and blank lines); it would end its group in the reference file")
        groups.setdefault(pair.context, []).append(post_process(reference, tokenize, lower))
    which = "" if subset == "all" else f" {subset}"
    if not groups:
        raise InputError(f"{input_file}: no{which} contexts")
    missing = [context for context in groups if context not in by_context]
    if missing and not allow_subset:
        raise InputError(
            f"{sample_file} predicts {len(groups) - len(missing)} of the {len(groups)} distinct{which} contexts "
            f"in {input_file} ({len(missing)} missing, e.g. {missing[0]!r}); scoring them against "
            "every context's references would be meaningless. Pass --allow_subset to write "
            "references for the predicted contexts only")
    kept_contexts = [context for context in groups if context in by_context]
    predictions = [post_process(one_line(cut(tokenizer.decode(by_context[c].predict))), tokenize, lower)
                   for c in kept_contexts]
    return Decoded([groups[c] for c in kept_contexts], predictions)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nlg decode", description=__doc__.split("\n\n")[0])
    arg = parser.add_argument
    arg(*spellings("sample_file"), dest="sample_file", required=True, help="predictions from `nlg beam`")
    arg(*spellings("input_file"), dest="input_file", required=True,
        help="the formatted data the predictions were made from (e.g. data/e2e/test_formatted.jsonl)")
    arg(*spellings("output_ref_file"), dest="output_ref_file", required=True,
        help="reference file (e2e) or folder (webnlg, dart) to write")
    arg(*spellings("output_pred_file"), dest="output_pred_file", required=True, help="prediction text file to write")
    arg(*spellings("ref_type"), dest="ref_type", choices=datasets.names(), default="e2e",
        help="which dataset's reference layout to write (default e2e)")
    arg(*spellings("ref_num"), dest="ref_num", type=int, default=None,
        help="webnlg, dart: references per context (default: the paper's, 6)")
    arg("--filter", choices=SUBSETS, default="all",
        help="webnlg: only the contexts of categories seen (or unseen) in training (default all)")
    arg("--tokenize", action="store_true", help="split off punctuation (the paper's regex tokeniser)")
    arg("--lower", action="store_true", help="lower-case references and predictions")
    arg("--vocab", default=None,
        help="folder with GPT-2's encoder.json and vocab.bpe (default: $NLG_VOCAB_DIR, else tiktoken's download)")
    arg(*spellings("allow_subset"), dest="allow_subset", action="store_true",
        help="write references only for the contexts that have a prediction")
    args = parser.parse_args(argv)
    dataset = datasets.get(args.ref_type)
    ref_num = dataset.recipe.scoring.ref_num if args.ref_num is None else args.ref_num

    from nlg.tokenizer import VOCAB_FILES, load_tokenizer

    ref_output = {"--output_ref_file": args.output_ref_file}
    check_outputs(inputs={"--sample_file": args.sample_file, "--input_file": args.input_file,
                          "--vocab": [Path(args.vocab) / name for name in VOCAB_FILES] if args.vocab else None},
                  outputs={"--output_pred_file": args.output_pred_file,
                           **({} if dataset.reference_folder else ref_output)},
                  replaced=ref_output if dataset.reference_folder else None)

    pairs = load_formatted(args.input_file)  # both inputs read, and bad JSON found, before the vocabulary
    records = read_jsonl(args.sample_file)
    tokenizer = load_tokenizer(args.vocab)
    predictions = read_predictions(args.sample_file, tokenizer.vocab_size, records)
    by_context = match_predictions(pairs, predictions, tokenizer, args.input_file, args.sample_file)
    decoded = build_decoded(pairs, by_context, tokenizer, tokenize=args.tokenize, lower=args.lower,
                            allow_subset=args.allow_subset, subset=args.filter, input_file=args.input_file,
                            sample_file=args.sample_file)
    warnings = dataset.write_references(decoded, Path(args.output_ref_file), Path(args.output_pred_file), ref_num)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    n_refs = sum(len(group) for group in decoded.references)
    unused = len(by_context) - len(decoded.predictions)
    print(f"{len(decoded.predictions)} contexts, {n_refs} references: wrote {args.output_ref_file} "
          f"and {args.output_pred_file}" + (f" ({unused} predictions outside --filter {args.filter} not used)"
                                            if unused else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
