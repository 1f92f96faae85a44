"""nlg.training.loss: the label-smoothed completion loss, by hand, the head run only where it is read, and
static-shape padding that changes nothing."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_config, trained_like

from nlg.methods.lora.layer import add_lora
from nlg.model import GPT, GPTConfig
from nlg.training.batching import Example, collate, collate_static
from nlg.training.loss import CompletionLM, completion_loss


def test_masked_label_smoothed_loss_matches_hand_computation():
    # context [5, 6, EOS] and completion [7, 8, EOS]: inputs 5 6 EOS 7 8, loss on predicting
    # 7 (from the context's EOS), 8 and the final EOS; second pair is shorter (padding).
    eos, eps, V = 9, 0.1, 10
    examples = [Example((5, 6, eos, 7, 8, eos), 3), Example((1, eos, 2, eos), 2)]
    batch = collate(examples)
    assert batch.input_ids.tolist() == [[5, 6, eos, 7, 8], [1, eos, 2, 0, 0]]
    assert batch.n_tokens == 5 + 3 and batch.n_loss == 3 + 2
    logits = torch.randn(2, 5, V, generator=torch.Generator().manual_seed(0))
    expected = []
    for b, t, target in [(0, 2, 7), (0, 3, 8), (0, 4, eos), (1, 1, 2), (1, 2, eos)]:
        logp = [logits[b, t, v].item() - math.log(sum(math.exp(x) for x in logits[b, t].tolist()))
                for v in range(V)]
        expected.append((1 - eps) * -logp[target] + eps * sum(-x for x in logp) / V)
    picked = logits.reshape(-1, V)[batch.loss_index]
    got = completion_loss(picked, batch.loss_targets, label_smooth=eps) / batch.n_loss
    assert got.item() == pytest.approx(sum(expected) / len(expected), rel=1e-6)
    # Without smoothing it is the plain masked cross-entropy.
    targets = torch.full((2, 5), -100)
    targets[0, 2:5] = torch.tensor([7, 8, eos])
    targets[1, 1:3] = torch.tensor([2, eos])
    plain = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), ignore_index=-100)
    assert (completion_loss(picked, batch.loss_targets) / batch.n_loss).item() == pytest.approx(plain.item(), rel=1e-6)
    # The joint objective predicts every next token, context included.
    assert collate(examples, obj="jlm").n_loss == 5 + 3


def test_head_runs_only_at_loss_positions_with_the_same_loss():
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, vocab_size=50, n_positions=32))
    examples = [Example((5, 6, 49, 7, 8, 49), 3), Example((1, 49, 2, 49), 2), Example((3, 4, 5), 3)]
    batch = collate(examples)
    full = gpt(batch.input_ids)  # (B, T, V): every position through the head
    expected = completion_loss(full.reshape(-1, 50)[batch.loss_index], batch.loss_targets, 0.1)
    got = CompletionLM(gpt)(batch.input_ids, batch.loss_index, batch.loss_targets, 0.1)
    torch.testing.assert_close(got, expected)
    assert gpt(batch.input_ids).shape == full.shape  # CompletionLM leaves the plain forward as it was


@pytest.mark.parametrize("obj", ["clm", "jlm"])
@pytest.mark.parametrize("train", ["lora", "full"])
def test_static_shapes_change_neither_the_loss_nor_the_gradients(obj: str, train: str):
    # `collate_static` adds rows, columns and loss slots; none may add to the loss or to any
    # gradient, the embeddings' included (padding is fed through them).
    torch.manual_seed(0)
    gpt = GPT(tiny_config())
    if train == "lora":
        add_lora(gpt, rank=4, alpha=32, dropout=0.0, targets=("q", "v", "fc"))
        trained_like(gpt)
    lm = CompletionLM(gpt)
    gen = torch.Generator().manual_seed(1)
    examples = [Example(tuple(torch.randint(1, 300, (n,), generator=gen).tolist()), context)
                for n, context in ((20, 8), (33, 12), (7, 3), (45, 30))]
    exact, static = collate(examples, obj), collate_static(examples, obj, rows=6, max_width=63)
    assert static.shape == (6, 48, 64 if obj == "clm" else 112) and exact.shape == (4, 44, exact.n_loss)
    results = []
    for batch in (exact, static):
        lm.zero_grad(set_to_none=True)
        loss = lm(batch.input_ids, batch.loss_index, batch.loss_targets, 0.1)
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in lm.named_parameters() if p.grad is not None}))
    (exact_loss, exact_grads), (static_loss, static_grads) = results
    torch.testing.assert_close(static_loss, exact_loss, rtol=1e-6, atol=0)
    assert exact_grads.keys() == static_grads.keys() and len(exact_grads) > 0
    for name, grad in exact_grads.items():  # float rounding only: sums over other blockings
        assert (static_grads[name] - grad).norm() <= 1e-6 * grad.norm(), name
