"""The CUDA paths, checked against the CPU ones and against each other.

Skipped where no GPU is present (as in CI); `bench/gpu_check.sh` runs them on a GPU machine.
Everything else in the suite covers the same code on the CPU, so these tests only pin what a
device change can break: kernels that round differently, bf16 autocast, tensors left on the
wrong device, resuming with CUDA RNG state, and what only exists on a GPU: `--compile graphs`
(captured CUDA graphs: the same training as the uncaptured static steps, eager's within bf16
noise, exact resume, non-finite steps skipped inside the graphs), steps that never make the
host wait (CUDA's sync debug mode), Inductor's GPU kernels, and beam search's early-stop
checks every few steps.
"""

from __future__ import annotations

import pytest
import torch
from helpers import (
    adapter_of,
    assert_same_log,
    killed_run,
    metrics,
    random_examples,
    run_steps,
    tiny_stepper,
    trainable_base,
    write_copy_task,
)

from nlg.beam import BeamConfig, generate
from nlg.methods.lora.peft_files import read_adapter
from nlg.model import GPT, GPTConfig, KVCache
from nlg.train import main as train_main
from nlg.training.step import train_step

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
        model.cuda()
        assert generate(model, contexts, config, batch_size=24) == expected  # early-stop checks every 8th step
        for check_every in (1, 3, 64):
            assert generate(model, contexts, config, batch_size=7, check_every=check_every) == expected


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


@pytest.mark.parametrize("mode", ["none", "graphs"])
def test_cuda_training_learns_in_bf16_and_resumes_exactly(training_args, tmp_path, monkeypatch, mode):
    training_args = [*training_args, "--compile", mode]
    full = tmp_path / "full"
    assert train_main([*training_args, "--work_dir", str(full)]) == 0
    losses = [r["loss"] for r in metrics(full) if "loss" in r]
    assert losses[-1] < 0.7 * losses[0], losses

    broken = tmp_path / "broken"
    killed_run([*training_args, "--work_dir", str(broken)], 10, monkeypatch)
    assert train_main([*training_args, "--work_dir", str(broken), "--resume", "latest"]) == 0

    expected, got = read_adapter(full / "checkpoint-24")[1], read_adapter(broken / "checkpoint-24")[1]
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-5, rtol=0)
    assert_same_log(metrics(broken), metrics(full), rel=1e-5)


def test_graphs_train_as_static_steps_do_and_as_eager_within_bf16_noise(training_args, tmp_path):
    logs = {}
    for mode in ("none", "static", "graphs"):
        work = tmp_path / mode
        assert train_main([*training_args, "--lora_dropout", "0", "--compile", mode,
                                  "--work_dir", str(work)]) == 0
        logs[mode] = metrics(work)
    # The captured graphs replay the static steps' kernels on the same shapes.
    assert_same_log(logs["graphs"], logs["static"], rel=1e-4)
    # Eager pads each batch to its own length: other matmul shapes, other bf16 rounding.
    assert [sorted(r) for r in logs["graphs"]] == [sorted(r) for r in logs["none"]]
    for graphs, eager in zip(logs["graphs"], logs["none"], strict=True):
        for key in ("loss", "valid_loss"):
            if key in eager:
                assert graphs[key] == pytest.approx(eager[key], rel=0.05, abs=0.02), (graphs, eager)
    losses = [r["loss"] for r in logs["graphs"] if "loss" in r]
    assert losses[-1] < 0.7 * losses[0]


@pytest.mark.parametrize("mode", ["none", "static", "graphs"])
def test_steps_never_make_the_host_wait(mode: str):
    stepper = tiny_stepper(mode, device="cuda", dropout=0.1, clip=0.5, grad_acc=2)
    data = random_examples(48, seed=1)
    run_steps(stepper, data[:16], steps=2, grad_acc=2)  # first steps: captures, lazy set-up
    torch.cuda.set_sync_debug_mode("error")
    try:
        run_steps(stepper, data[16:], steps=4, grad_acc=2)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    reading = stepper.ledger.read()
    assert reading.bad_step is None and reading.window[1] == 6 * 8 * 14


def test_graphs_skip_a_non_finite_step_on_the_device_for_good():
    stepper = tiny_stepper("graphs", device="cuda", dropout=0.1)
    data = random_examples(24, seed=3)
    run_steps(stepper, data[:8], steps=2)
    good = adapter_of(stepper)
    ln_f = stepper.lm.gpt.transformer.ln_f.weight  # frozen, read by the captured graph at each replay
    with torch.no_grad():
        ln_f[0] = float("nan")
    run_steps(stepper, data[8:12], steps=1)
    with torch.no_grad():
        ln_f[0] = 1.0
    run_steps(stepper, data[12:24], steps=3)
    reading = stepper.ledger.read()
    assert reading.bad_step == 3 and reading.bad_loss != reading.bad_loss
    for name, value in adapter_of(stepper).items():
        assert torch.equal(value, good[name]), name


def test_inductor_on_cuda_trains_as_static_steps_do(fresh_dynamo):
    data = random_examples(32, seed=4)
    adapters = {}
    for mode in ("static", "inductor"):
        stepper = tiny_stepper(mode, device="cuda")
        run_steps(stepper, data, steps=8)
        adapters[mode] = adapter_of(stepper)
    for name, value in adapters["static"].items():  # bf16 kernels of other shapes and fusions
        assert (adapters["inductor"][name] - value).norm() <= 2e-2 * value.norm(), name


def test_a_static_step_takes_one_batch_shape_per_capture():
    # Batches are copied into a captured graph's inputs: a batch of another shape gets a graph of its own.
    stepper = tiny_stepper("graphs", device="cuda")
    short = random_examples(8, seed=5, completion=4)  # 16 loss slots instead of 64
    long = random_examples(8, seed=6)
    for examples in (long[:4], short[:4], long[4:], short[4:]):
        train_step(stepper, [stepper.batch(examples)])
    assert len(stepper.run_micro.graphs) == 2
    assert stepper.ledger.read().window[1] == 8 * 14 + 8 * 4


def test_graphs_draw_new_dropout_masks_at_every_replay():
    # A capture puts the random-number state back; the graph must still advance it at each
    # replay (the same masks at every step would train on, silently wrong).
    stepper = tiny_stepper("graphs", device="cuda", dropout=0.5)
    batch = stepper.batch(random_examples(4, seed=7))
    sums = []
    for _ in range(3):  # no update in between: only the masks can change the loss
        stepper.accumulate(batch, last=True)
        sums.append(stepper.ledger.step_loss.item())
    losses = [sums[0], sums[1] - sums[0], sums[2] - sums[1]]
    assert len(set(losses)) == 3, losses
