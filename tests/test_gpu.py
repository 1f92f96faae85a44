"""The CUDA paths, checked against the CPU ones.

Skipped where no GPU is present (as in CI); `bench/gpu_check.sh` runs them on a GPU machine.
Everything else in the suite covers the same code on the CPU, so these tests only pin what a
device change can break: kernels that round differently, bf16 autocast, tensors left on the
wrong device, and resuming with CUDA RNG state.
"""

from __future__ import annotations

import pytest
import torch
from helpers import assert_same_log, metrics, trainable_base, write_copy_task

import nlg.train as train_module
from nlg.adapter_files import read_adapter
from nlg.beam import BeamConfig, generate
from nlg.model import GPT, GPTConfig, KVCache

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

VOCAB = 512
CONFIG = GPTConfig(n_layer=4, n_head=4, n_embd=128, vocab_size=VOCAB, n_positions=256)


@pytest.fixture()
def exact_fp32():
    """TF32 matmuls round to 10 mantissa bits; CPU comparisons need true fp32."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def random_gpt(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(CONFIG).eval()


def test_cuda_logits_cache_and_left_padding_equal_cpu(exact_fp32):
    model = random_gpt()
    ids = torch.randint(0, VOCAB, (3, 40), generator=torch.Generator().manual_seed(1))
    positions = torch.arange(40).repeat(3, 1)
    mask = torch.ones(3, 40, dtype=torch.bool)
    mask[1, :7] = False  # row 1 is left-padded by 7
    positions[1] = (mask[1].long().cumsum(0) - 1).clamp(min=0)
    with torch.no_grad():
        expected = model(ids, position_ids=positions, key_mask=mask)
        gpu = model.cuda()
        full = gpu(ids.cuda(), position_ids=positions.cuda(), key_mask=mask.cuda())
        cache = KVCache(gpu.config, batch=3, max_len=40, device="cuda")
        steps = [gpu(ids[:, :25].cuda(), position_ids=positions[:, :25].cuda(),
                     key_mask=mask[:, :25].cuda(), cache=cache)]
        for t in range(25, 40):
            steps.append(gpu(ids[:, t : t + 1].cuda(), position_ids=positions[:, t : t + 1].cuda(),
                             key_mask=mask[:, : t + 1].cuda(), cache=cache))
    real = mask.unsqueeze(-1).expand_as(expected)
    torch.testing.assert_close(full.cpu()[real], expected[real], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(torch.cat(steps, 1).cpu()[real], expected[real], atol=1e-4, rtol=1e-4)


def test_bf16_weights_stay_close_to_fp32(exact_fp32):
    # `nlg beam --dtype bfloat16` casts the whole model; its logits must stay usable.
    model = random_gpt().cuda()
    ids = torch.randint(0, VOCAB, (4, 48), device="cuda")
    with torch.no_grad():
        fp32 = model(ids)
        bf16 = model.to(torch.bfloat16)(ids).float()
    assert ((bf16 - fp32).norm() / fp32.norm()).item() < 2e-2


def test_beam_search_on_cuda_equals_cpu_for_any_batch_size():
    # float64 with widened logits: no near-ties for device rounding to flip.
    model = random_gpt(seed=3).double()
    with torch.no_grad():
        for param in model.parameters():
            param.mul_(3)
    gen = torch.Generator().manual_seed(4)
    contexts = [torch.randint(0, VOCAB, (int(n),), generator=gen).tolist()
                for n in torch.randint(3, 20, (24,), generator=gen)]
    config = BeamConfig(beam=5, eval_len=16, length_penalty=0.8, no_repeat_ngram_size=3,
                        repetition_penalty=1.2, eos_ids=(7,))
    with torch.no_grad():
        expected = generate(model, contexts, config, batch_size=5)
        got = generate(model.cuda(), contexts, config, batch_size=24)
    assert got == expected


@pytest.fixture()
def training_args(tmp_path) -> list[str]:
    """Flags shared by every run below: a widened random base and copy-task data, made once."""
    base = trainable_base(tmp_path / "base", CONFIG, seed=5)
    return ["--train_data", str(write_copy_task(tmp_path / "train.jsonl", 96, seed=6)),
            "--valid_data", str(write_copy_task(tmp_path / "valid.jsonl", 24, seed=7)),
            "--init_checkpoint", str(base),
            "--device", "cuda", "--train_batch_size", "8", "--seq_len", "64", "--lr", "1e-2",
            "--warmup_step", "2", "--lora_dim", "8", "--lora_dropout", "0.1", "--log_interval", "2",
            "--eval_interval", "6", "--save_interval", "6", "--max_step", "24"]


def test_cuda_training_learns_in_bf16_and_resumes_exactly(training_args, tmp_path, monkeypatch):
    full = tmp_path / "full"
    assert train_module.main([*training_args, "--work_dir", str(full)]) == 0
    losses = [r["loss"] for r in metrics(full) if "loss" in r]
    assert losses[-1] < 0.7 * losses[0], losses

    broken, real_step, calls = tmp_path / "broken", train_module.train_step, []

    def dies_at_step_10(*a, **k):
        calls.append(1)
        if len(calls) == 10:
            raise KeyboardInterrupt("simulated kill")
        return real_step(*a, **k)

    monkeypatch.setattr(train_module, "train_step", dies_at_step_10)
    with pytest.raises(KeyboardInterrupt):
        train_module.main([*training_args, "--work_dir", str(broken)])
    monkeypatch.setattr(train_module, "train_step", real_step)
    assert train_module.main([*training_args, "--work_dir", str(broken), "--resume", "latest"]) == 0

    expected, got = read_adapter(full / "checkpoint-24")[1], read_adapter(broken / "checkpoint-24")[1]
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-5, rtol=0)
    assert_same_log(metrics(broken), metrics(full), rel=1e-5)
