import json

import pytest

from nlg import tokenizer as tok_module
from nlg.files import InputError
from nlg.tokenizer import EOS_ID, VOCAB_SIZE, load_tokenizer, read_vocab

EXAMPLE = " The Vaults pub near Café Adriatic has a 5 star rating .\n\n"
EXAMPLE_IDS = [383, 21314, 2240, 1474, 42151, 1215, 380, 1512, 468, 257, 642, 3491, 7955, 764, 628]

# Beyond E2E: the corners of GPT-2's split pattern and of byte-level BPE.
TRICKY = [
    "", " ", "  two  spaces  ", "trailing   ", "\n\n", "a\n\nb\t\tc \n", "I'm we've they'll she'd it's",
    "DON'T", "1234567 3.14159 2021-08-01", "naïve café über straße", "日本語のテキスト", "emoji 🚀🔥",
    "\u00a0non-breaking\u00a0space", "£ 20 - 25", "x = f(a,b);  // comment", "Ġ Ċ",
]


@pytest.fixture(scope="module")
def tok(vocab_dir):
    return load_tokenizer(vocab_dir)


@pytest.fixture(scope="module")
def reference(vocab_dir):
    """An independent GPT-2 BPE: Hugging Face's tokenizer built from the same two files.

    (transformers 5 has no pure-Python GPT2Tokenizer any more; GPT2Tokenizer now runs the
    Rust `tokenizers` BPE, which merges by vocab.bpe's pair order like OpenAI's encoder.
    It ignores vocab_file=/merges_file=, hence vocab= and merges=.)
    """
    transformers = pytest.importorskip("transformers")
    vocab = json.loads((vocab_dir / "encoder.json").read_text(encoding="utf-8"))
    lines = (vocab_dir / "vocab.bpe").read_text(encoding="utf-8").split("\n")[1:]
    merges = [tuple(line.split(" ")) for line in lines if line]
    ref = transformers.GPT2Tokenizer(vocab=vocab, merges=merges)
    assert ref.encode(EXAMPLE) == EXAMPLE_IDS  # the reference itself is GPT-2
    return ref


def e2e_texts(e2e_raw_dir):
    """Every context and " " + completion of the shared valid and test files."""
    texts = []
    for split in ("valid", "test"):
        for line in (e2e_raw_dir / f"{split}.txt").read_text(encoding="utf-8").splitlines():
            context, completion = line.split("||")
            texts += [context.strip(), " " + completion.strip()]
    return texts


def test_known_ids(tok):
    assert tok.encode(EXAMPLE) == EXAMPLE_IDS
    assert tok.encode("\n\n") == [628]
    assert tok.eos_id == EOS_ID == 50256
    assert tok.vocab_size == VOCAB_SIZE == 50257
    assert tok.decode([EOS_ID]) == "<|endoftext|>"
    assert tok.decode(EXAMPLE_IDS) == EXAMPLE


def test_equals_reference_on_all_e2e_texts(tok, reference, e2e_raw_dir):
    texts = e2e_texts(e2e_raw_dir)
    assert len(texts) == 2 * (4672 + 4693)
    expected = [reference.encode(text) for text in texts]
    assert tok.encode_batch(texts) == expected
    assert [tok.decode(ids) for ids in expected[:500]] == texts[:500]


@pytest.mark.parametrize("text", TRICKY)
def test_equals_reference_on_tricky_text(tok, reference, text):
    assert tok.encode(text) == reference.encode(text)
    assert tok.decode(tok.encode(text)) == text


def test_endoftext_in_text_is_ordinary_text(tok):
    text = "before<|endoftext|>after"
    ids = tok.encode(text)
    assert EOS_ID not in ids
    assert tok.encode_batch([text]) == [ids]
    assert tok.decode(ids) == text


def test_decode_replaces_a_cut_character(tok):
    ids = tok.encode("🚀")  # four bytes, three tokens
    assert len(ids) == 3 and tok.decode(ids) == "🚀"
    assert tok.decode(ids[:1]) == "\ufffd"


def test_batch_uses_threads_and_keeps_order(tok):
    texts = [f"text number {i} " * (i % 7) for i in range(5000)]
    assert tok.encode_batch(texts, num_threads=4) == [tok.encode(t) for t in texts]
    assert tok.encode_batch([]) == []


def test_vocab_from_environment(vocab_dir, monkeypatch):
    monkeypatch.setenv("NLG_VOCAB_DIR", str(vocab_dir))
    monkeypatch.setattr(tok_module, "download_ranks", lambda: pytest.fail("must not download"))
    tokenizer = load_tokenizer()
    assert tokenizer.source == str(vocab_dir)
    assert tokenizer.encode(EXAMPLE) == EXAMPLE_IDS


def test_download_fallback_when_no_vocab_given(vocab_dir, monkeypatch):
    monkeypatch.delenv("NLG_VOCAB_DIR", raising=False)
    monkeypatch.setattr(tok_module, "download_ranks", lambda: read_vocab(vocab_dir))
    tokenizer = load_tokenizer()
    assert tokenizer.source == "tiktoken gpt2 download"
    assert tokenizer.encode(EXAMPLE) == EXAMPLE_IDS


def test_no_vocab_and_no_network_says_how_to_fix(monkeypatch):
    def offline():
        raise ConnectionError("network unreachable")

    monkeypatch.delenv("NLG_VOCAB_DIR", raising=False)
    monkeypatch.setattr(tok_module, "download_ranks", offline)
    with pytest.raises(InputError) as caught:
        load_tokenizer()
    message = str(caught.value)
    for hint in ("network unreachable", "--vocab", "NLG_VOCAB_DIR", "encoder.json", "vocab.bpe"):
        assert hint in message
    with pytest.raises(InputError, match="--vocab"):
        load_tokenizer(allow_download=False)


def test_vocab_dir_without_files(tmp_path):
    (tmp_path / "encoder.json").write_text("{}")
    with pytest.raises(InputError, match=r"no vocab\.bpe there; give a directory"):
        load_tokenizer(tmp_path)


def test_mismatched_vocab_files_are_refused(vocab_dir, tmp_path):
    """Merges out of order would give other ids under tiktoken: refuse, naming the line."""
    lines = (vocab_dir / "vocab.bpe").read_text(encoding="utf-8").split("\n")
    lines[1], lines[2] = lines[2], lines[1]
    (tmp_path / "vocab.bpe").write_text("\n".join(lines), encoding="utf-8")
    (tmp_path / "encoder.json").symlink_to(vocab_dir / "encoder.json")
    with pytest.raises(InputError, match=r"vocab\.bpe:2: merge .* do not belong together"):
        read_vocab(tmp_path)
