"""nlg.metrics.meteor: METEOR's paraphrase table cut to what a set of references can match."""

from __future__ import annotations

import gzip
import re
import subprocess
from pathlib import Path

import pytest

from nlg.metrics import meteor, webnlg
from nlg.metrics.java import coco_dir, find_java
from nlg.metrics.treebank import Tokenizer, punkt_sentences


def test_cut_paraphrase_table_keeps_entries_a_reference_can_match(tmp_path):
    entries = [  # (probability, phrase, paraphrase), sorted by phrase as METEOR's table is
        (b"0.1", b"a pub", b"an inn"),  # phrase wholly in the vocabulary: kept
        (b"0.2", b"a pub", b"a bar"),  # kept (same phrase)
        (b"0.3", b"bistro", b"a cafe"),  # paraphrase wholly in the vocabulary: kept
        (b"0.4", b"bistro", b"eatery"),  # neither side: no reference can match it
        (b"0.5", b"pub food", b"a bar"),  # "food" unknown, "bar" unknown: dropped
    ]
    text = b"".join(b"\n".join(entry) + b"\n" for entry in entries)
    source = tmp_path / "table.gz"
    source.write_bytes(gzip.compress(text))
    for block_size in (1, 7, 1 << 22):  # blocks that cut lines and entries anywhere
        assert list(meteor._table_entries(source, block_size)) == entries
    target = tmp_path / "cache" / "cut.gz"
    assert meteor.cut_paraphrase_table(source, target, {b"a", b"pub", b"cafe"}) == (3, 5)
    assert gzip.decompress(target.read_bytes()) == b"".join(
        b"\n".join(entry) + b"\n" for entry in entries[:3]
    )
    assert meteor.cached_cut_table(target) == target
    target.write_bytes(gzip.compress(b"0.1\na pub\nan inn\n"))  # damaged: not used
    assert meteor.cached_cut_table(target) is None
    assert meteor.cached_cut_table(tmp_path / "missing.gz") is None



needs_java = pytest.mark.skipif(find_java() is None, reason="needs a Java runtime")


def generation_eval_meteor(refs: list[list[str]], hyps: list[str], folder: Path) -> float:
    """METEOR as GenerationEval runs it: tokenised texts in files (references one per line, N
    per instance), `java -Xmx2G -jar meteor-1.5.jar HYP REF -l en -norm -r N`, the last score."""
    tokenizer = Tokenizer(punkt_sentences())
    hyp_file, ref_file = folder / "hypothesis_meteor", folder / "reference_meteor"
    hyp_file.write_text("\n".join(tokenizer(hyps)), encoding="utf-8")
    ref_file.write_text("\n".join(t for group in refs for t in tokenizer(group)), encoding="utf-8")
    command = [find_java(), "-Xmx2G", "-jar", "meteor-1.5.jar", str(hyp_file), str(ref_file)]
    command += ["-l", "en", "-norm", "-r", str(len(refs[0]))]
    out = subprocess.run(command, cwd=coco_dir() / "meteor", capture_output=True, check=True)
    return float(re.findall(r"Final score:\s*(\S+)", out.stdout.decode())[-1])


@needs_java
def test_pipes_in_webnlg_text_are_words_as_in_generation_eval_files(tmp_path, shared_meteor):
    """Issue 23 case 9: `|||` in a reference (or hypothesis) is a word in GenerationEval's files;
    sent as-is over METEOR's stdio protocol it would split the reference in two. GenerationEval's
    file run starts its own JVM; the stdio runs share the session's (tests/conftest.py)."""
    refs = [
        ["Alan Bean ||| was born in Wheeler , Texas .", "Bean was born in Texas ."],
        ["The band A|||B plays rock .", "A||||B is a rock band ."],
        ["It is |||", ""],
    ]
    hyps = ["Alan Bean was born in Wheeler , Texas .", "A ||| B is a rock band .", "It is ||| |||"]
    expected = generation_eval_meteor(refs, hyps, tmp_path)
    got = webnlg.score(refs, hyps, metrics="meteor", cache_dir=None).scores["METEOR"]
    assert got == pytest.approx(expected, abs=1e-14)  # the file run prints all digits
    tokenizer = Tokenizer(punkt_sentences())
    ref_tokens, hyp_tokens = [tokenizer(group) for group in refs], tokenizer(hyps)
    with shared_meteor(find_java()) as raw:  # the protocol with the texts as they are
        split, _ = raw.score(ref_tokens, hyp_tokens)
        protected, _ = raw.score(ref_tokens, hyp_tokens, files_convention=True)
    assert protected == got
    assert abs(split - expected) > 1e-3  # what the unprotected protocol gave: another number


def test_protect_pipes():
    assert meteor.protect_pipes("a|||b |||| c || d | e") == "a| | |b | | | | c || d | e"
