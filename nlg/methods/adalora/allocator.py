"""AdaLoRA's training hook: the orthogonal regulariser and the rank allocator, as PEFT 0.22 computes
them (peft.tuners.adalora: AdaLoraModel.forward's regulariser, AdaLoraModel.update_and_allocate
and RankAllocator), behind nlg.methods.TrainingHook.

**Regulariser** (the paper's Eq. 4 writes R(P, Q) = ||PᵀP − I||²_F + ||QQᵀ − I||²_F; PEFT, whose
numbers we match, and the authors' own loralib (QingruZhang/AdaLoRA, compute_orth_regu) add the
*unsquared* Frobenius norm averaged over the matrices):

    R = w · (1/M) Σ_matrices ||C − I||_F,    C = Q Qᵀ (lora_A) or Pᵀ P (lora_B),  w = orth_reg_weight

over every module's Q and P (M = 2 · modules). PEFT adds R to each forward's loss; with one
micro-batch per update (or a trainer that divides each micro-batch's loss by their number) the
update's gradient is that of the mean loss plus ∇R, once. `regularise()` adds exactly w·∇R to the
unscaled gradients of the mean loss (nlg.training.step.Stepper.update), before clipping: the same
update for any --grad_acc, world size or autocast (R is computed in float32 outside autocast).

**Allocation** (`after_update(step)`, after AdamW's update, before the gradients are zeroed, with
`step` the updates done before this one, as PEFT's loop passes its global_step). For every
trainable entry w of P, Λ and Q, with its gradient g of this step (the paper's Eq. 8-10):

    I = |w · g|,   Ī ← β1 Ī + (1 − β1) I,   Ū ← β2 Ū + (1 − β2) |I − Ī|,   s(w) = Ī · Ū

and the score of triplet i of a module: S_i = s(Λ_i) + mean_j s(Q_ij) + mean_k s(P_ki) (Eq. 7).
The budget b(t) (Eq. 11), total ranks over the modules (b(0) = Σ init_r, b_T = target_r · modules):

    t <= tinit                        b = b(0), no masking
    tinit < t <= T − tfinal           b = int((b(0) − b_T) · (1 − (t − tinit)/(T − tfinal − tinit))³ + b_T),
                                      masking when t % deltaT == 0
    t > T − tfinal                    the final allocation, re-applied at every step

Masking keeps the b highest-scoring triplets over all modules: Λ_i ← 0 wherever S_i <= the
(b(0) − b)-th smallest score (ties masked together, as PEFT's torch.kthvalue threshold). Ī and Ū
update while t < T − tfinal; at t = T − tfinal the final allocation is made (b = b_T) and they are
cleared. Masked triplets keep training (their P, Q, Λ receive gradients and AdamW updates, Λ is
re-zeroed at the next masking), as in PEFT. The flags keep target_r < init_r and tinit < T − tfinal
(as PEFT's config): then b(t) < b(0) at every masking step (int() rounds down), so k >= 1 (PEFT's
torch.kthvalue cannot take k = 0: with target_r = init_r it raises).

`state_dict()` holds Ī and Ū, the last allocation and every module's P, Λ and Q in full (a
checkpoint's PEFT files drop the triplets not kept; --resume needs them back for an exact run).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from nlg.files import InputError
from nlg.methods import TrainingHook
from nlg.methods.adalora.layer import PARAMETERS, SVDLinear, modules


def check_schedule(settings, total_steps: int) -> None:
    """InputError naming the flags unless the run has a budget phase (PEFT's AdaLoraConfig check:
    tinit < total_step − tfinal)."""
    if settings.tinit >= total_steps - settings.tfinal:
        raise InputError(f"--adalora_tinit {settings.tinit} and --adalora_tfinal {settings.tfinal} leave no steps to "
                         f"allocate ranks in this run's {total_steps} (need tinit < steps - tfinal)")


class AdaLoRAHook(TrainingHook):
    """One run's regulariser and rank allocator over `model`'s SVDLinear layers."""

    def __init__(self, model: nn.Module, settings, total_steps: int):
        check_schedule(settings, total_steps)
        self.model, self.settings, self.total_step = model, settings, total_steps
        self.layers: dict[str, SVDLinear] = modules(model)
        self.init_budget = sum(layer.rank for layer in self.layers.values())
        self.target_budget = settings.target_r * len(self.layers)
        self.exp_avg_ipt: dict[str, Tensor] = {}  # Ī by parameter name (`...c_attn.lora_A`)
        self.exp_avg_unc: dict[str, Tensor] = {}  # Ū
        model.adalora_total_step = total_steps  # adapter_config.json's total_step (nlg.methods.adalora)

    def parameters(self) -> dict[str, nn.Parameter]:
        """Every module's lora_A, lora_E, lora_B by name, in model order."""
        return {f"{name}.{kind}": getattr(layer, kind) for name, layer in self.layers.items() for kind in PARAMETERS}

    # -- the regulariser ------------------------------------------------------------------------

    def regularise(self) -> None:
        weight = self.settings.orth_reg_weight
        if weight == 0 or not self.layers:
            return
        matrices = [(m, m is layer.lora_A) for layer in self.layers.values() for m in (layer.lora_A, layer.lora_B)]
        with torch.enable_grad(), torch.autocast(matrices[0][0].device.type, enabled=False):
            total = 0
            for matrix, is_q in matrices:  # PEFT's order: each module's lora_A (Q Qᵀ), then its lora_B (PᵀP)
                cov = matrix @ matrix.T if is_q else matrix.T @ matrix
                eye = torch.eye(*cov.size(), dtype=cov.dtype, device=cov.device)
                total = total + torch.norm(cov - eye, p="fro")
            loss = weight * (total / len(matrices))
            grads = torch.autograd.grad(loss, [m for m, _ in matrices])
        with torch.no_grad():
            for (matrix, _), grad in zip(matrices, grads, strict=True):
                if matrix.grad is None:
                    matrix.grad = grad.detach().clone()
                else:
                    matrix.grad.add_(grad)

    # -- the allocator (PEFT's AdaLoraModel.update_and_allocate) ---------------------------------

    def after_update(self, step: int) -> None:
        end = self.total_step - self.settings.tfinal
        if step < end:
            self.update_importance()
            budget, mask = self.budget(step)
            if mask:
                self.mask_to_budget(budget)
        elif step == end:
            self.mask_to_budget(self.target_budget)
            self.exp_avg_ipt, self.exp_avg_unc = {}, {}
        else:
            self.mask_kept()

    def budget(self, step: int) -> tuple[int, bool]:
        """(b(t), whether step t masks): PEFT's RankAllocator.budget_schedule."""
        tinit, tfinal, total = self.settings.tinit, self.settings.tfinal, self.total_step
        if step <= tinit:
            return self.init_budget, False
        if step > total - tfinal:
            return self.target_budget, True
        mul_coeff = 1 - (step - tinit) / (total - tfinal - tinit)
        budget = int((self.init_budget - self.target_budget) * (mul_coeff**3) + self.target_budget)
        return budget, step % self.settings.delta_t == 0

    @torch.no_grad()
    def update_importance(self) -> None:
        """Ī and Ū of every entry from this step's |w · g| (PEFT's RankAllocator.update_ipt)."""
        beta1, beta2 = self.settings.beta1, self.settings.beta2
        for name, p in self.parameters().items():
            if name not in self.exp_avg_ipt:
                self.exp_avg_ipt[name] = torch.zeros_like(p)
                self.exp_avg_unc[name] = torch.zeros_like(p)
            ipt = (p * p.grad).abs().detach() if p.grad is not None else torch.zeros_like(p)
            self.exp_avg_ipt[name] = beta1 * self.exp_avg_ipt[name] + (1 - beta1) * ipt
            self.exp_avg_unc[name] = beta2 * self.exp_avg_unc[name] + (1 - beta2) * (ipt - self.exp_avg_ipt[name]).abs()

    def scores(self) -> dict[str, Tensor]:
        """S_i of every triplet of every module, (r,) by module name (PEFT's mask_to_budget scores)."""
        out = {}
        for name in self.layers:
            element = {kind: self.exp_avg_ipt[f"{name}.{kind}"] * self.exp_avg_unc[f"{name}.{kind}"]
                       for kind in PARAMETERS}
            vector = torch.cat([element["lora_A"].mean(dim=1, keepdim=True),
                                element["lora_B"].mean(dim=0, keepdim=False).view(-1, 1)], dim=1)
            out[name] = element["lora_E"].view(-1) + vector.sum(dim=1, keepdim=False).view(-1)
        return out

    @torch.no_grad()
    def mask_to_budget(self, budget: int) -> None:
        """Keep the `budget` best triplets over all modules, zero the rest's Λ, record them as kept."""
        scores = self.scores()
        # a 0-d tensor (PEFT takes .item() of it: the same float32 number, without waiting for the device)
        threshold = torch.kthvalue(torch.cat(list(scores.values())), k=self.init_budget - budget)[0]
        for name, layer in self.layers.items():
            kept = ~(scores[name] <= threshold)
            layer.lora_E.masked_fill_(~kept.view(-1, 1), 0.0)
            layer.kept = kept.clone()

    @torch.no_grad()
    def mask_kept(self) -> None:
        """Re-apply the last allocation (PEFT's mask_using_rank_pattern)."""
        for layer in self.layers.values():
            if layer.kept is not None:
                layer.lora_E.masked_fill_(~layer.kept.view(-1, 1), 0.0)

    # -- the checkpoint's method_state ------------------------------------------------------------

    def state_dict(self) -> dict:
        return {"exp_avg_ipt": {k: v.detach().clone() for k, v in self.exp_avg_ipt.items()},
                "exp_avg_unc": {k: v.detach().clone() for k, v in self.exp_avg_unc.items()},
                "kept": {name: layer.kept.clone() for name, layer in self.layers.items() if layer.kept is not None},
                "weights": {name: p.detach().clone() for name, p in self.parameters().items()}}

    def load_state_dict(self, state: dict) -> None:
        params = self.parameters()
        where = "training_state.pt: method_state"
        if not isinstance(state, dict) or set(state) != {"exp_avg_ipt", "exp_avg_unc", "kept", "weights"}:
            raise InputError(f"{where}: not AdaLoRA's (keys {sorted(state) if isinstance(state, dict) else state!r})")
        for key in ("exp_avg_ipt", "exp_avg_unc", "weights"):
            names = set(state[key])
            if names and names != set(params):
                raise InputError(f"{where}: {key}: its tensors are not the model's AdaLoRA parameters "
                                 f"({sorted(names ^ set(params))[0]})")
            for name, tensor in state[key].items():
                if tuple(tensor.shape) != tuple(params[name].shape):
                    raise InputError(f"{where}: {key}: {name} has shape {tuple(tensor.shape)}, the model's "
                                     f"{tuple(params[name].shape)}")
        unknown = set(state["kept"]) - set(self.layers)
        if unknown:
            raise InputError(f"{where}: kept: {sorted(unknown)[0]} is not an AdaLoRA module of the model")
        with torch.no_grad():
            for name, tensor in state["weights"].items():
                params[name].copy_(tensor)
        device = next(iter(params.values())).device
        self.exp_avg_ipt = {k: v.to(device) for k, v in state["exp_avg_ipt"].items()}
        self.exp_avg_unc = {k: v.to(device) for k, v in state["exp_avg_unc"].items()}
        for name, layer in self.layers.items():
            kept = state["kept"].get(name)
            layer.kept = None if kept is None else kept.to(device=device, dtype=torch.bool)
