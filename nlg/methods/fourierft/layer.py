"""FourierFT's layer: a frozen projection plus Re(IDFT2) of n trainable spectral entries.

    y = W x + b + ΔW x,   ΔW = α · Re(IDFT2(F)),   F (out x in) zero but at n entries (E: rows, cols)

E is drawn once from the seed (torch.randperm(out·in) seeded, its first n, row = i // in,
col = i % in: PEFT's FourierFTLayer.update_layer, so the same seed places the same entries), the
same for every layer of one shape. c = F[E] trains (PEFT's `fourierft_spectrum`, initialised
standard normal as PEFT's default init_weights=False). ΔW is rebuilt from c at every forward
(one ifft2 of the (out x in) matrix, as PEFT does: ΔW depends on all of c densely, there is no
cheaper factorisation) and folded into W by `merge` for decoding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nlg.methods.layers import DeltaLinear, replace_in_blocks

_ENTRIES: dict[tuple[int, int, int, int], tuple[Tensor, Tensor]] = {}


def entries(out_features: int, in_features: int, n: int, seed: int) -> tuple[Tensor, Tensor]:
    """Rows and columns of the n spectral entries (PEFT's placement for this seed)."""
    key = (out_features, in_features, n, seed)
    if key not in _ENTRIES:
        order = torch.randperm(out_features * in_features, generator=torch.Generator().manual_seed(seed))[:n]
        _ENTRIES[key] = (order // in_features, order % in_features)
    return _ENTRIES[key]


class FourierFTLinear(DeltaLinear):
    """An nn.Linear (the same `weight`/`bias`, shared with the base) plus `fourierft_spectrum` (n,)."""

    def __init__(self, base: nn.Linear, n_frequency: int, scaling: float, seed: int):
        super().__init__(base)
        self.n_frequency, self.scaling, self.seed = n_frequency, float(scaling), seed
        rows, cols = entries(self.out_features, self.in_features, n_frequency, seed)
        device = self.weight.device
        self.register_buffer("fourierft_rows", rows.to(device), persistent=False)
        self.register_buffer("fourierft_cols", cols.to(device), persistent=False)
        self.fourierft_spectrum = nn.Parameter(torch.randn(n_frequency, device=device, dtype=torch.float32))

    def delta_weight(self) -> Tensor:
        """α · Re(IDFT2(F)), (out x in), in float32 (ifft2 has no bf16/fp16 kernels)."""
        spectrum = self.fourierft_spectrum.float()
        dense = spectrum.new_zeros(self.out_features, self.in_features)
        dense = dense.index_put((self.fourierft_rows, self.fourierft_cols), spectrum)
        return torch.fft.ifft2(dense).real * self.scaling

    def forward(self, x: Tensor) -> Tensor:
        out = F.linear(x, self.weight, self.bias)
        if self.merged:
            return out
        return out + F.linear(x, self.delta_weight().to(x.dtype))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, n_frequency={self.n_frequency}, scaling={self.scaling:g}, seed={self.seed}"


def modules(model: nn.Module) -> dict[str, FourierFTLinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, FourierFTLinear)}


def add(model: nn.Module, paths: tuple[str, ...], n_frequency: int, scaling: float, seed: int) -> None:
    """FourierFT on block-relative module `paths` of every block; everything else frozen."""
    if modules(model):
        raise ValueError("model already has FourierFT layers")
    replace_in_blocks(model, paths, lambda base, _: FourierFTLinear(base, n_frequency, scaling, seed))
