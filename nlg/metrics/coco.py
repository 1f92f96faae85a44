"""ROUGE-L and CIDEr as the MS-COCO caption evaluation (pycocoevalcap) computes them, on text
run through its Stanford PTB tokenizer: the E2E scorer's three COCO metrics bar METEOR.

The tokenizer is run as pycocoevalcap runs it (`PTBTokenizer -preserveLines -lowerCase`, its
punctuation tokens dropped), but for all sentences of both files in one Java run.
  ROUGE-L = (1 + beta^2) R P / (R + beta^2 P), beta = 1.2, with P and R the length of the longest
            common subsequence over the hypothesis and reference lengths (best reference per
            instance), averaged over instances;
  CIDEr   = pycocoevalcap's CIDEr-D: tf-idf weighted 1..4-gram cosine similarity (idf over this
            corpus' references), Gaussian length penalty sigma 6, clipped counts, x10.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from nlg.metrics.java import QUICK_JVM, coco_dir, one_line

PTB_ARGS = ["edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase"]


def ptb_tokenize(sentences: Sequence[str], java: str) -> list[str]:
    """pycocoevalcap's PTBTokenizer for many sentences in one Java run: Stanford PTBTokenizer
    `-preserveLines -lowerCase`, then its punctuation tokens dropped."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PUNCTUATIONS, STANFORD_CORENLP_3_4_1_JAR

    jar = coco_dir() / "tokenizer" / STANFORD_CORENLP_3_4_1_JAR
    text = "".join(one_line(sentence) + "\n" for sentence in sentences)
    command = [java, *QUICK_JVM, "-cp", str(jar), *PTB_ARGS]
    done = subprocess.run(command, input=text.encode("utf-8"), capture_output=True)
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace")[-2000:]
        raise RuntimeError(f"the PTB tokenizer failed ({' '.join(command)}):\n{err}")
    lines = done.stdout.decode("utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) != len(sentences):
        raise RuntimeError(
            f"the PTB tokenizer returned {len(lines)} lines for {len(sentences)} sentences"
        )
    punctuation = frozenset(PUNCTUATIONS)
    return [" ".join(w for w in line.rstrip().split(" ") if w not in punctuation) for line in lines]


def rouge_cider(
    references: Sequence[Sequence[str]], hypotheses: Sequence[str]
) -> dict[str, tuple[float, list[float]]]:
    """pycocoevalcap's ROUGE-L (beta 1.2, mean of sentence scores) and CIDEr (its CIDEr-D:
    sigma 6, clipped, x10, idf over this corpus' references) on tokenised texts."""
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    gts = {i: list(refs) for i, refs in enumerate(references)}
    res = {i: [hyp] for i, hyp in enumerate(hypotheses)}
    out = {}
    for name, scorer in (("ROUGE_L", Rouge()), ("CIDEr", Cider())):
        corpus, per_instance = scorer.compute_score(gts, res)
        out[name] = (float(corpus), [float(x) for x in per_instance])
    return out
