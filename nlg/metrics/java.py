"""The Java side of scoring: finding a runtime, the jars pycocoevalcap ships, and how lines go in.

METEOR 1.5 (both suites) and the Stanford PTB tokenizer (E2E's ROUGE-L and CIDEr) are Java
programs; their jars come with the pycocoevalcap package. Without `java` on PATH the metrics
that need it are reported as unavailable (None) with `JAVA_HELP`, unless the caller asked for
all of them (`strict`), which raises MissingJavaError.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

JAVA_HELP = (
    "METEOR 1.5 and the Stanford PTB tokenizer (ROUGE_L and CIDEr are computed on its output) "
    "need a Java runtime, and `java` is not on PATH. Install one, e.g. "
    "`apt-get install default-jre-headless` (Debian/Ubuntu), `brew install openjdk` (macOS) or "
    "`conda install -c conda-forge openjdk`."
)

# Characters the Java readers treat as line breaks (the official E2E reader splits lines there
# too); as spaces they tokenise the same, and every input line stays one output line.
LINE_BREAKS = re.compile("[\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
# JVM options that only save CPU (no optimising JIT, one GC thread: METEOR ~15% less CPU time);
# since Java 17 all floating point is strict, so the numbers cannot change.
QUICK_JVM = ["-XX:+IgnoreUnrecognizedVMOptions", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"]


class MissingJavaError(RuntimeError):
    """Metrics that need Java were required (--strict) but cannot be computed here."""


def find_java() -> str | None:
    return shutil.which("java")


def coco_dir() -> Path:
    """The installed pycocoevalcap package (it has no __init__.py, so use its __path__)."""
    import pycocoevalcap

    return Path(next(iter(pycocoevalcap.__path__)))


def java_unavailable_reason(java: str | None) -> str | None:
    """Why the Java metrics cannot run here (None: they can)."""
    if java is None:
        return JAVA_HELP
    try:
        coco_dir()
    except ImportError:
        return "METEOR, ROUGE_L and CIDEr need pycocoevalcap: `pip install pycocoevalcap`."
    return None


def one_line(sentence: str) -> str:
    """A sentence as one line for a Java reader (its line-break characters become spaces)."""
    return LINE_BREAKS.sub(" ", sentence)
