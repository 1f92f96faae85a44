"""Shared test fixtures: where the read-only shared data lives.

`NLG_SHARED_DIR` points at the `shared/` folder that sits beside the checkout
(default `../shared`); its files are read in place, never copied. For the test session, and
every process it starts, NLG_SHARED_DIR, NLG_VOCAB_DIR (GPT-2's vocabulary) and E2E_RAW_DIR
are set to that folder's when unset (or empty), so `python -m pytest` needs no variable and
no network; a variable already set is kept.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NLG_SHARED_DIR") or REPO.parent / "shared").resolve()
SHARED_ENV = {"NLG_SHARED_DIR": SHARED, "NLG_VOCAB_DIR": SHARED / "vocab" / "gpt2",
              "E2E_RAW_DIR": SHARED / "data" / "e2e"}

if SHARED.is_dir():
    for _name, _value in SHARED_ENV.items():
        if not os.environ.get(_name):
            os.environ[_name] = str(_value)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared data not found at {SHARED} (set NLG_SHARED_DIR)")
    return SHARED


@pytest.fixture(scope="session")
def vocab_dir(shared_dir: Path) -> Path:
    return shared_dir / "vocab" / "gpt2"


@pytest.fixture(scope="session")
def e2e_raw_dir(shared_dir: Path) -> Path:
    return shared_dir / "data" / "e2e"


@pytest.fixture(scope="session")
def webnlg_xml_dir(shared_dir: Path) -> Path:
    """The WebNLG 2017 challenge release: train/ and dev/ {1..7}triples/*.xml, test/testdata_with_lex.xml."""
    return shared_dir / "data" / "webnlg-2017"


@pytest.fixture(scope="session")
def webnlg_json_dir(shared_dir: Path) -> Path:
    """The LoRA paper's json form of WebNLG 2017; only dev.json is here."""
    return shared_dir / "data" / "webnlg"


@pytest.fixture(scope="session")
def dart_raw_dir(shared_dir: Path) -> Path:
    """DART v1.1.1: dev as json and XML, test as XML."""
    return shared_dir / "data" / "dart"


@pytest.fixture(scope="session")
def hf_gpt2(vocab_dir: Path):
    """GPT-2 BPE from Hugging Face's GPT2Tokenizer (the paper's encoder algorithm, independently written)."""
    import json

    transformers = pytest.importorskip("transformers")
    vocab = json.loads((vocab_dir / "encoder.json").read_text(encoding="utf-8"))
    lines = (vocab_dir / "vocab.bpe").read_text(encoding="utf-8").split("\n")[1:]
    return transformers.GPT2Tokenizer(vocab=vocab, merges=[tuple(line.split(" ")) for line in lines if line])


@pytest.fixture(scope="session")
def tokenizer(vocab_dir: Path):
    from nlg.tokenizer import load_tokenizer

    return load_tokenizer(vocab_dir)


def _prepare(name: str, raw_dir: Path, out: Path, tokenizer) -> tuple[Path, list]:
    from nlg import datasets
    from nlg.data import prepare

    return out, prepare(datasets.get(name), raw_dir, out, tokenizer, progress=False)


@pytest.fixture(scope="session")
def webnlg_prepared(tmp_path_factory, webnlg_xml_dir: Path, tokenizer) -> tuple[Path, list]:
    """`nlg data webnlg` on the XML release, once per session: (out dir, split summaries)."""
    return _prepare("webnlg", webnlg_xml_dir, tmp_path_factory.mktemp("webnlg"), tokenizer)


@pytest.fixture(scope="session")
def dart_prepared(tmp_path_factory, dart_raw_dir: Path, tokenizer) -> tuple[Path, list]:
    """`nlg data dart` on the shared files (dev json, test XML), once per session: (out dir, summaries)."""
    return _prepare("dart", dart_raw_dir, tmp_path_factory.mktemp("dart"), tokenizer)


@pytest.fixture(scope="session")
def write():
    """write(path, text or bytes) -> path, making the folders on the way."""

    def write_file(path: Path, content: str | bytes) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
        return path

    return write_file


@pytest.fixture()
def fresh_dynamo():
    """torch.compile's caches emptied around the test: code compiled by other tests for other
    shapes would make dynamo compile dynamic shapes, which takes far longer."""
    import torch

    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.fixture(scope="module")
def single_thread():
    """Torch on one thread for a module: tiny models gain nothing from threads, and on a busy
    shared CPU they lose a lot. Modules ask for it with pytest.mark.usefixtures."""
    import torch  # here, not at the top: conftest stays importable without torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def lora_run(tmp_path_factory) -> dict[str, Path]:
    """A finished 3-step LoRA run with a checkpoint per step, on a tiny random base, once per
    session: {"base", "data", "work"}. Tests copy what they damage (helpers.train_argv runs it)."""
    import torch
    from helpers import RUN_CONFIG, nlg, train_argv, trainable_base, write_encoded

    root = tmp_path_factory.mktemp("run")
    paths = {"base": trainable_base(root / "base", RUN_CONFIG, seed=0), "data": write_encoded(root / "train.jsonl"),
             "work": root / "work"}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert nlg(*train_argv(paths, paths["work"], "--max_step", 3)) == 0
    finally:
        torch.set_num_threads(threads)
    return paths


@pytest.fixture
def full_disk(monkeypatch):
    """Every fsync (each atomic write makes one before its rename) fails as on a full disk; for
    a path containing `where` only, when set."""
    from helpers import ENOSPC

    real_fsync, state = os.fsync, {"where": None}

    def fsync(fd: int) -> None:
        if state["where"] is None or state["where"] in os.readlink(f"/proc/self/fd/{fd}"):
            raise ENOSPC
        real_fsync(fd)

    monkeypatch.setattr("nlg.files.os.fsync", fsync)
    return state



@pytest.fixture(scope="session")
def _meteor_jvm():
    """One METEOR 1.5 JVM with its full paraphrase table for the session (see shared_meteor)."""
    from nlg.metrics.meteor import Meteor

    class Kept(Meteor):
        """A Meteor whose `with` block leaves it running; a block that fails kills it (it may be
        blocked on a pipe), and the next test gets a new one."""

        def __exit__(self, error_type, error, traceback) -> None:
            if error_type is not None:
                self.process.kill()
                self.process.wait()

        def close(self) -> None:
            pass

    kept: list[Kept] = []

    def meteor(java: str) -> Kept:
        if not kept or kept[0].process.poll() is not None or kept[0].command[0] != java:
            if kept:
                Meteor.close(kept.pop())
            kept.append(Kept(java))
        return kept[0]

    yield meteor
    if kept:
        Meteor.close(kept[0])


@pytest.fixture
def shared_meteor(_meteor_jvm, monkeypatch):
    """Scoring with the full paraphrase table (`cache_dir=None`, `nlg score --no_cache`) uses one
    METEOR JVM for the whole session instead of starting its own: the same jar, arguments and
    table, so the same numbers (METEOR's stdio protocol keeps no state between lines), without
    loading the 5.3M-entry table again (~13 s of CPU each time). Scoring with a cache still
    starts its own (`start_meteor`). Yields the function that gives the session's Meteor."""
    from nlg.metrics import e2e, meteor, resample, webnlg

    def start(references, java, cache_dir, salt=""):
        if cache_dir is None:
            return _meteor_jvm(java), None
        return meteor.start_meteor(references, java, cache_dir, salt)

    for module in (e2e, webnlg, resample):
        monkeypatch.setattr(module, "start_meteor", start)
    yield _meteor_jvm
