"""Adapter analysis: is a LoRA update healthy, and what does it do to the pretrained weights?

Reads an adapter directory (`nlg train`'s, or any PEFT LoRA adapter for GPT-2) and reports,
for every adapted matrix ΔW = (alpha/r) · B A  (out x in, nn.Linear orientation: y = W x):

    singular values σ_1 >= σ_2 >= ...   of ΔW (rank <= r, so at most r of them are nonzero)
    ‖ΔW‖_F = sqrt(Σ σ_i²)   ‖ΔW‖_2 = σ_1
    stable rank      ‖ΔW‖_F² / ‖ΔW‖_2²                         (1 <= srank <= rank)
    effective rank   exp(H(p)), p_i = σ_i / Σ_j σ_j, H = -Σ p_i ln p_i   (Roy & Vetterli, 2007)
    power law alpha  of the eigenvalues λ_i = σ_i² of ΔWᵀΔW, as WeightWatcher fits a layer's
                     spectrum: continuous maximum likelihood α = 1 + n / Σ_{λ_i >= xmin} ln(λ_i / xmin),
                     with xmin the eigenvalue minimising the Kolmogorov-Smirnov distance
                     (Clauset, Shalizi & Newman, 2009; the same numbers as the `powerlaw`
                     package WeightWatcher calls). Needs >= `min_evals` nonzero eigenvalues,
                     so low-rank adapters (r = 4: four eigenvalues) are not fitted.

With `--base CHECKPOINT`, the LoRA paper's Section 7.3 question — does ΔW amplify directions
the pretrained W already has? Let U (out x r) and V (in x r) hold the top r left/right singular
vectors of ΔW (r = the adapter's rank; the paper writes the projection Uᵀ W Vᵀ with V as the
r x in matrix of right singular vectors as rows). Then

    projection      ‖Uᵀ W V‖_F        how much of W lies in ΔW's r-dimensional subspaces
    amplification   ‖ΔW‖_F / ‖Uᵀ W V‖_F
    controls        ‖Uᵀ W V‖_F for random orthonormal U, V (seeded; its root mean square is
                    r ‖W‖_F / sqrt(out · in)) and for W's own top r singular vectors (= the root
                    of the sum of W's top r squared singular values, the ceiling).

The paper (Table 7: GPT-3, layer 48, W_q, r = 4) reports 0.32 for ΔW's directions against
21.67 for W's own and 0.02 for random ones, and ‖ΔW‖_F = 6.91: an amplification factor of
6.91 / 0.32 ≈ 21.5. A factor near the random control's means ΔW ignores W's structure.

W is the matching slice of the base checkpoint: published GPT-2 files store c_attn, c_proj,
c_fc as Conv1D weights of shape (in, out), which are transposed to (out, in) here (as
`nlg.weights.load_base_weights` does); q, k, v are then rows [0:d], [d:2d], [2d:3d] of c_attn.

With `--compare OTHER`, the paper's Section 7.1 normalised subspace similarity between the two
adapters' matching matrices:

    φ(i, j) = ‖U1[:, :i]ᵀ U2[:, :j]‖_F² / min(i, j)      in [0, 1]

where U1, U2 hold orthonormal bases ordered by singular value. The paper uses the right singular
vectors of A; by default we use the right singular vectors of ΔW instead (`--subspace delta`):
they span the same input-space subspace as A's when B has full rank, but their order follows
ΔW's singular values and does not depend on how ΔW happens to be factored into B A (any
invertible M gives the same ΔW = (B M)(M⁻¹ A)), so adapters from different tools or ranks compare
fairly. `--subspace A` reproduces the paper's choice exactly. The headline is i = j = min(k1, k2),
k the numerical ranks; the JSON holds the whole k1 x k2 grid.

Adapter layout (see `nlg.methods.lora.peft_files`): our q, v slices are one block-structured c_attn adapter
of rank 2r; `split_blocks` splits it back into per-slice ΔW_q = s B_q A_q, ΔW_v = s B_v A_v using
the safetensors metadata. PEFT's own c_attn adapter is one fused matrix, reported as module
`qkv`. No model is built: every ΔW comes straight from the tensors, and its SVD from the r x r
core (QR of B and Aᵀ), exactly and in float64.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from torch import Tensor

from nlg.cli import run_main, spellings
from nlg.files import InputError, atomic_files, atomic_write, check_outputs
from nlg.methods import require_lora
from nlg.methods.lora.layer import TARGETS, LoRAConfig, target_rows
from nlg.methods.lora.peft_files import (
    AdapterError,
    adapter_lora_config,
    adapter_paths,
    is_adapter_dir,
    read_adapter,
    split_blocks,
)
from nlg.training.checkpoints import checkpoint_step
from nlg.weights import checkpoint_files

MODULES = tuple(TARGETS)  # q, k, v, qkv, o, fc, proj


# ---------------------------------------------------------------------------------------------
# Quantities: pure functions of arrays
# ---------------------------------------------------------------------------------------------


def singular_values(matrix: np.ndarray) -> np.ndarray:
    """All singular values of a dense matrix, descending, in float64."""
    return np.linalg.svd(np.asarray(matrix, dtype=np.float64), compute_uv=False)


def top_singular_values(matrix: np.ndarray, k: int) -> np.ndarray:
    """The k largest singular values, from the eigenvalues of the smaller Gram matrix (M Mᵀ or
    MᵀM). Several times faster than a full SVD of a 1024 x 4096 matrix; squaring costs accuracy
    only for singular values below ~1e-8 · σ_1, never for the top ones."""
    m = np.asarray(matrix, dtype=np.float64)
    gram = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
    evals = np.linalg.eigvalsh(gram)[::-1][:k]
    return np.sqrt(np.clip(evals, 0.0, None))


def low_rank_svd(B: np.ndarray, A: np.ndarray, scaling: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thin SVD of scaling · B A without forming it: (U (out x k), s (k), Vh (k x in)), k = r.

    B = Q_B R_B and Aᵀ = Q_A R_A give B A = Q_B (R_B R_Aᵀ) Q_Aᵀ, so the SVD of the r x r core
    P S Qh yields U = Q_B P and Vh = Qh Q_Aᵀ: exact, and cheap for a 4096 x 1024 matrix.
    """
    B = np.asarray(B, dtype=np.float64)
    A = np.asarray(A, dtype=np.float64)
    QB, RB = np.linalg.qr(B)
    QA, RA = np.linalg.qr(A.T)
    P, s, Qh = np.linalg.svd(scaling * (RB @ RA.T))
    return QB @ P, s, Qh @ QA.T


def numerical_rank(s: np.ndarray, shape: tuple[int, int]) -> int:
    """How many singular values exceed σ_1 · max(shape) · eps (numpy's matrix_rank rule)."""
    if s.size == 0 or s[0] <= 0:
        return 0
    return int(np.count_nonzero(s > s[0] * max(shape) * np.finfo(np.float64).eps))


def stable_rank(s: np.ndarray) -> float:
    """‖M‖_F² / ‖M‖_2² = Σ σ_i² / σ_1²; 0 for a zero matrix."""
    s = np.asarray(s, dtype=np.float64)
    if s.size == 0 or s.max() <= 0:
        return 0.0
    return float(np.sum(s**2) / s.max() ** 2)


def effective_rank(s: np.ndarray) -> float:
    """Roy & Vetterli's effective rank exp(-Σ p_i ln p_i), p = s / Σ s (0 ln 0 = 0); 0 for a zero matrix."""
    s = np.asarray(s, dtype=np.float64)
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s[s > 0] / total
    return float(np.exp(-np.sum(p * np.log(p))))


@dataclass(frozen=True)
class PowerLawFit:
    alpha: float  # exponent of p(x) ∝ x^-alpha for x >= xmin
    xmin: float
    ks_distance: float  # sup |S(x) - P(x)| over the tail
    n_tail: int  # points >= xmin
    sigma: float  # standard error of alpha, (alpha - 1) / sqrt(n_tail)


def fit_power_law(values: np.ndarray) -> PowerLawFit:
    """Continuous power-law fit with the KS-optimal xmin (Clauset, Shalizi & Newman, 2009).

    For each distinct value taken as xmin (but the largest: a tail needs two distinct points),
    the maximum likelihood exponent of the tail x >= xmin is alpha = 1 + n / Σ ln(x_i / xmin),
    and its Kolmogorov-Smirnov distance is max |F(x) - P(x)| over the tail's distinct values,
    P(x) = 1 - (x / xmin)^(1 - alpha) the fitted CDF and F(x) the fraction of tail points below
    x. The xmin with the smallest distance wins. This is the `powerlaw` package's procedure
    (which WeightWatcher calls), F included, so alpha and xmin match theirs; the textbook KS
    statistic also compares just after each jump and differs by less than 1/n.
    Non-positive values are ignored.
    """
    x = np.sort(np.asarray(values, dtype=np.float64).ravel())
    x = x[x > 0]
    distinct, first = np.unique(x, return_index=True)
    if distinct.size < 2:
        raise ValueError(f"a power-law fit needs at least two distinct positive values, got {distinct.size}")
    logs = np.log(x)
    suffix = np.cumsum(logs[::-1])[::-1]  # suffix[k] = Σ_{i >= k} ln x_i
    best: PowerLawFit | None = None
    for c, k in enumerate(first[:-1]):
        n = x.size - k
        alpha = 1.0 + n / (suffix[k] - n * logs[k])
        fitted = 1.0 - (distinct[c:] / x[k]) ** (1.0 - alpha)
        empirical = (first[c:] - k) / n  # fraction of the tail strictly below each value
        distance = float(np.max(np.abs(fitted - empirical)))
        if best is None or distance < best.ks_distance:
            best = PowerLawFit(alpha=float(alpha), xmin=float(x[k]), ks_distance=distance,
                               n_tail=int(n), sigma=float((alpha - 1.0) / math.sqrt(n)))
    return best


def projection_norm(weight: np.ndarray, U: np.ndarray, V: np.ndarray) -> float:
    """‖Uᵀ W V‖_F: W (out x in) projected onto the column spaces of U (out x r) and V (in x r)."""
    return float(np.linalg.norm(U.T @ weight @ V))


def amplification(weight: np.ndarray, U: np.ndarray, s: np.ndarray, Vh: np.ndarray) -> float:
    """The LoRA paper's amplification factor ‖ΔW‖_F / ‖Uᵀ W Vᵀ‖_F (Section 7.3).

    U, s, Vh: the top-r singular triplets of ΔW (U: out x r, Vh: r x in); weight: the pretrained
    W of the same slice, (out x in). inf when W has nothing in those directions.
    """
    projection = projection_norm(weight, U, Vh.T)
    delta = float(np.sqrt(np.sum(np.asarray(s, dtype=np.float64) ** 2)))
    if projection == 0.0:
        return 0.0 if delta == 0.0 else math.inf
    return delta / projection


def random_orthonormal(rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """A uniformly random (Haar) rows x cols matrix with orthonormal columns."""
    Q, R = np.linalg.qr(rng.standard_normal((rows, cols)))
    return Q * np.where(np.diag(R) < 0, -1.0, 1.0)  # sign fix makes the distribution uniform


def subspace_similarity_grid(U1: np.ndarray, U2: np.ndarray) -> np.ndarray:
    """φ(i, j) for every 1 <= i <= k1, 1 <= j <= k2 as a (k1 x k2) array (grid[i-1, j-1]).

    ‖U1[:, :i]ᵀ U2[:, :j]‖_F² is the sum of the squared overlaps in the top-left i x j block of
    U1ᵀ U2, so a 2-D cumulative sum gives every entry at once.
    """
    overlap = (np.asarray(U1, dtype=np.float64).T @ np.asarray(U2, dtype=np.float64)) ** 2
    cumulative = overlap.cumsum(axis=0).cumsum(axis=1)
    i = np.arange(1, overlap.shape[0] + 1)[:, None]
    j = np.arange(1, overlap.shape[1] + 1)[None, :]
    return cumulative / np.minimum(i, j)


def subspace_similarity(U1: np.ndarray, U2: np.ndarray, i: int, j: int) -> float:
    """The LoRA paper's φ = ‖U1[:, :i]ᵀ U2[:, :j]‖_F² / min(i, j): 1 when one top subspace
    contains the other, 0 when they are orthogonal. U1, U2: orthonormal columns, best first."""
    if not (1 <= i <= U1.shape[1] and 1 <= j <= U2.shape[1]):
        raise ValueError(f"i={i}, j={j} outside 1..{U1.shape[1]} x 1..{U2.shape[1]}")
    return float(np.linalg.norm(U1[:, :i].T @ U2[:, :j]) ** 2 / min(i, j))


# ---------------------------------------------------------------------------------------------
# Reading adapters and base weights
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Update:
    """One adapted matrix ΔW = scaling · B A (out x in), e.g. layer 3's q slice of c_attn."""

    layer: int
    module: str  # q, k, v, qkv, o, fc, proj
    A: np.ndarray  # (r x in), float64
    B: np.ndarray  # (out x r), float64
    scaling: float
    tensor: str  # the lora_A tensor it came from, for messages

    @property
    def rank(self) -> int:
        return self.A.shape[0]

    @property
    def shape(self) -> tuple[int, int]:
        return self.B.shape[0], self.A.shape[1]

    def dense(self) -> np.ndarray:
        return self.scaling * (self.B @ self.A)


_MODULE_NAME = re.compile(r"^transformer\.h\.(\d+)\.(.+)$")


def _module_order(module: str) -> int:
    return MODULES.index(module)


def read_updates(directory: str | os.PathLike) -> tuple[LoRAConfig, list[Update]]:
    """Every ΔW of an adapter directory, block-structured c_attn adapters split into slices.

    Raises AdapterError naming the directory and tensor for a missing partner tensor, a shape
    that does not fit the adapter's rank, non-finite values, or a c_attn B that is nonzero
    outside its slices' blocks.
    """
    config, tensors, metadata = read_adapter(directory)
    lora_config = adapter_lora_config(config, tensors, metadata)
    modules: dict[str, dict[str, Tensor]] = {}
    for name, tensor in tensors.items():
        module, _, kind = name.rpartition(".lora_")
        if kind not in ("A.weight", "B.weight"):
            raise AdapterError(f"{directory}: tensor {name} is not a LoRA A or B weight")
        if tensor.ndim != 2:
            raise AdapterError(f"{directory}: tensor {name} has shape {tuple(tensor.shape)}, expected a matrix")
        modules.setdefault(module, {})[kind[0]] = tensor.double()
    updates = []
    for module, pair in sorted(modules.items()):
        updates += _module_updates(directory, module, pair, lora_config)
    updates.sort(key=lambda u: (u.layer, _module_order(u.module)))
    return lora_config, updates


def _module_updates(directory: str | os.PathLike, module: str, pair: dict[str, Tensor],
                    lora_config: LoRAConfig) -> list[Update]:
    """One Update per slice of one adapted module, from its A and B tensors ({"A": .., "B": ..})."""
    match = _MODULE_NAME.match(module)
    if match is None:
        raise AdapterError(f"{directory}: tensor {module}.lora_A.weight is not on a GPT-2 block")
    for kind in "AB":
        if kind not in pair:
            raise AdapterError(f"{directory}: tensor {module}.lora_{kind}.weight is missing")
    layer, path = int(match.group(1)), match.group(2)
    slices = [t for t in lora_config.targets if TARGETS[t][0] == path]
    if not slices:
        raise AdapterError(f"{directory}: tensor {module}.lora_A.weight is on {path}, which the "
                           f"adapter's targets {','.join(lora_config.targets)} do not include")
    A, B, r = pair["A"], pair["B"], lora_config.rank
    width = len(slices) * r
    if A.shape[0] != width or B.shape[1] != width or B.shape[0] < 1:
        raise AdapterError(f"{directory}: tensors {module}.lora_A.weight {tuple(A.shape)} and "
                           f"lora_B.weight {tuple(B.shape)} do not fit {len(slices)} slice(s) of rank {r}")
    d = A.shape[1]  # c_attn's input width is n_embd, the width of each q/k/v block
    if any(TARGETS[t][1] is not None for t in slices) and B.shape[0] != 3 * d:
        raise AdapterError(f"{directory}: tensor {module}.lora_B.weight has {B.shape[0]} rows; "
                           f"a q/k/v-sliced c_attn with input width {d} has {3 * d}")
    rows = {target: target_rows(target, B.shape[0], d) for target in slices}
    parts = split_blocks(A, B, rows, r, f"{directory}: tensor {module}.lora_B.weight")
    return [Update(layer=layer, module=target, A=a.numpy(), B=b.numpy(), scaling=lora_config.scaling,
                   tensor=f"{module}.lora_A.weight") for target, (a, b) in parts.items()]


def expected_shape(module: str, n_embd: int) -> tuple[int, int]:
    """(out, in) of a target's ΔW in a GPT-2 of width n_embd."""
    d = n_embd
    return {"q": (d, d), "k": (d, d), "v": (d, d), "qkv": (3 * d, d), "o": (d, d),
            "fc": (4 * d, d), "proj": (d, 4 * d)}[module]


def check_card(updates: list[Update], card: str, directory: str | os.PathLike) -> None:
    """The adapter must fit model card `card` (its width and depth)."""
    from nlg.model import card_config

    try:
        config = card_config(card)
    except ValueError as error:
        raise InputError(str(error)) from None
    for update in updates:
        shape = expected_shape(update.module, config.n_embd)
        if update.layer >= config.n_layer or update.shape != shape:
            raise AdapterError(f"{directory}: tensor {update.tensor} (layer {update.layer}, {update.module}) "
                               f"gives ΔW of shape {update.shape}; card {card} has {config.n_layer} layers "
                               f"and needs {shape} (another model size?)")


class _LazyCheckpoint(Mapping):
    """A .safetensors checkpoint as a {our key: tensor} mapping that reads a tensor only when
    asked: the analysis needs a few projections, not the embeddings (gpt2.lg is 3 GB)."""

    def __init__(self, path: Path):
        from safetensors import safe_open

        from nlg.weights import normalise_keys

        self._handle = safe_open(str(path), framework="pt")
        # normalise_keys maps our spelling onto the file's: apply it to the names themselves
        self._names = normalise_keys({name: name for name in self._handle.keys()})

    def __getitem__(self, key: str):
        return self._handle.get_tensor(self._names[key])

    def __iter__(self):
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def read_base(path: str | os.PathLike) -> tuple[Mapping, str]:
    """({our key spelling: tensor as stored}, the file it came from) of a base checkpoint: an HF
    directory or a bare .safetensors / .bin file, as `nlg.weights.from_pretrained` accepts."""
    from nlg.weights import CheckpointError, find_weights_file, normalise_keys, read_state_dict

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such checkpoint file or directory")
    try:
        weights = find_weights_file(path) if path.is_dir() else path
        if weights.suffix == ".safetensors":
            return _LazyCheckpoint(weights), str(weights)
        return normalise_keys(read_state_dict(weights)), str(weights)
    except CheckpointError:  # already an InputError naming the file
        raise
    except Exception as error:  # a corrupt or foreign file: say which
        raise InputError(f"{path}: cannot read checkpoint ({type(error).__name__}: {error})") from None


def base_matrix(state: Mapping, source: str, update: Update, adapter: str | os.PathLike) -> np.ndarray:
    """The pretrained W (out x in, float64) that `update` changes.

    Checkpoints store the four projections as Conv1D weights, (in, out): transposed here to
    nn.Linear's (out, in) so that W and ΔW line up; q/k/v then take their block of c_attn rows.
    """
    path, part = TARGETS[update.module]
    key = f"transformer.h.{update.layer}.{path}.weight"
    if key not in state:
        raise AdapterError(f"{adapter}: tensor {update.tensor} adapts {key}, which base {source} lacks")
    weight = state[key].double().numpy().T
    if part is not None:
        d = weight.shape[1]
        weight = weight[part * d : (part + 1) * d]
    if weight.shape != update.shape:
        raise AdapterError(f"{adapter}: tensor {update.tensor} gives ΔW of shape {update.shape} "
                           f"({update.module}), but base {source} has {key} giving {weight.shape}: "
                           "the adapter does not fit this base (another model size?)")
    return weight


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------


def _number(x: float) -> float | None:
    """JSON has no inf/NaN: those become null."""
    return float(x) if math.isfinite(x) else None


def _json_safe(value):
    """The report with every non-finite float as null, so the file is valid JSON."""
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _basis(update: Update, svd: tuple[np.ndarray, np.ndarray, np.ndarray], which: str) -> np.ndarray:
    """Orthonormal input-space basis (in x k), best first: ΔW's right singular vectors or A's."""
    if which == "A":
        _, s, Vh = np.linalg.svd(update.A, full_matrices=False)
    else:
        _, s, Vh = svd
    return Vh[: numerical_rank(s, update.shape)].T


def describe(update: Update, min_evals: int) -> tuple[dict, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Spectral statistics of one ΔW (JSON-ready) and its thin SVD."""
    U, s, Vh = low_rank_svd(update.B, update.A, update.scaling)
    rank = numerical_rank(s, update.shape)
    row: dict = {
        "layer": update.layer, "module": update.module, "shape": list(update.shape),
        "rank": update.rank, "numerical_rank": rank,
        "singular_values": [float(v) for v in s],
        "frobenius": float(np.sqrt(np.sum(s**2))), "spectral": float(s[0]) if s.size else 0.0,
        "stable_rank": stable_rank(s), "effective_rank": effective_rank(s),
        "power_law": None, "notes": [],
    }
    if rank == 0:
        row["notes"].append("zero update (B = 0: untrained?)")
    evals = s[:rank] ** 2  # the nonzero eigenvalues of ΔWᵀΔW
    if rank >= min_evals:
        try:
            row["power_law"] = asdict(fit_power_law(evals))
        except ValueError as error:  # e.g. every eigenvalue equal: no tail to fit
            row["power_law_note"] = f"not fitted: {error}"
    else:
        row["power_law_note"] = (f"{rank} nonzero eigenvalues < min_evals {min_evals} "
                                 f"(ΔW has rank <= r = {update.rank}): not fitted")
    return row, (U, s, Vh)


def _amplification(update: Update, svd: tuple[np.ndarray, np.ndarray, np.ndarray], weight: np.ndarray,
                   frobenius: float, rng: np.random.Generator) -> dict:
    """The amplification columns of one row: ΔW's factor and projection, and the controls."""
    U, s, Vh = svd
    r = update.rank
    U_rand = random_orthonormal(update.shape[0], r, rng)
    V_rand = random_orthonormal(update.shape[1], r, rng)
    random_projection = projection_norm(weight, U_rand, V_rand)
    return {
        "factor": _number(amplification(weight, U[:, :r], s[:r], Vh[:r])),
        "projection": projection_norm(weight, U[:, :r], Vh[:r].T),
        "random_projection": random_projection,
        # the same factor had ΔW pointed in the random directions: the contrast
        "random_factor": _number(frobenius / random_projection if random_projection > 0 else math.inf),
        "top_projection": float(np.linalg.norm(top_singular_values(weight, r))),
        "weight_frobenius": float(np.linalg.norm(weight)),
    }


def _similarity(update: Update, svd: tuple[np.ndarray, np.ndarray, np.ndarray], match: Update,
                subspace: str) -> dict | None:
    """φ(k, k) and the whole grid between `update` and the other adapter's `match`; None when
    either is a zero update."""
    U1 = _basis(update, svd, subspace)
    U2 = _basis(match, low_rank_svd(match.B, match.A, match.scaling), subspace)
    k = min(U1.shape[1], U2.shape[1])
    if k == 0:
        return None
    grid = subspace_similarity_grid(U1, U2)
    return {"i": k, "j": k, "phi": float(grid[k - 1, k - 1]), "grid": np.round(grid, 6).tolist()}


def analyze(adapter: str | os.PathLike, base: str | os.PathLike | None = None,
            card: str | None = None, compare: str | os.PathLike | None = None,
            min_evals: int = 10, subspace: str = "delta", seed: int = 0) -> dict:
    """The whole report as a JSON-ready dict: adapter settings and one row per adapted matrix."""
    if subspace not in ("delta", "A"):
        raise ValueError(f"subspace must be 'delta' or 'A', got {subspace!r}")
    for directory in (adapter, compare):
        if directory is not None:
            require_lora(directory, "nlg analyze")  # ΔW = BA means nothing for other methods
    lora_config, updates = read_updates(adapter)
    if not updates:
        raise AdapterError(f"{adapter}: the adapter has no LoRA tensors")
    if card is not None:
        check_card(updates, card, adapter)
    state, source = read_base(base) if base is not None else (None, None)
    other_config, other_updates = read_updates(compare) if compare is not None else (None, [])
    other = {(u.layer, u.module): u for u in other_updates}
    rng = np.random.default_rng(seed)
    rows = []
    for update in updates:
        row, svd = describe(update, min_evals)
        if state is not None:
            weight = base_matrix(state, source, update, adapter)
            row["amplification"] = _amplification(update, svd, weight, row["frobenius"], rng)
            if row["amplification"]["factor"] is None:
                row["notes"].append("W has no component in ΔW's directions: amplification is infinite")
        match = other.get((update.layer, update.module))
        if match is not None:
            if match.shape != update.shape:
                raise AdapterError(f"{compare}: tensor {match.tensor} gives ΔW of shape {match.shape}; "
                                   f"{adapter} has {update.shape} for layer {update.layer} {update.module}")
            row["similarity"] = _similarity(update, svd, match, subspace)
            if row["similarity"] is None:
                row["notes"].append("a zero update: no subspace to compare")
        rows.append(row)
    report = {
        "adapter": str(adapter),
        "config": {"rank": lora_config.rank, "alpha": lora_config.alpha,
                   "scaling": lora_config.scaling, "targets": list(lora_config.targets)},
        "base": source, "model_card": card, "min_evals": min_evals, "matrices": rows,
    }
    if state is not None:
        report["seed"] = seed
    if compare is not None:
        ours = {(u.layer, u.module) for u in updates}
        report["compare"] = {
            "adapter": str(compare), "subspace": subspace,
            "config": {"rank": other_config.rank, "alpha": other_config.alpha,
                       "targets": list(other_config.targets)},
            "only_in_compare": [f"{layer}.{module}" for layer, module in sorted(set(other) - ours)],
            "only_in_adapter": [f"{layer}.{module}" for layer, module in sorted(ours - set(other))],
        }
    return report


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if x == math.inf:
        return "inf"
    return f"{x:.3g}"


def _cells(row: dict, top: int, has_base: bool, has_compare: bool) -> list[str]:
    """One matrix's line of the table (its notes, if any, as a last cell)."""
    s = row["singular_values"]
    cells = [str(row["layer"]), row["module"], "x".join(map(str, row["shape"]))]
    cells += [_fmt(s[i]) if i < len(s) else "-" for i in range(top)]
    fit = row["power_law"]
    cells += [_fmt(row["frobenius"]), _fmt(row["spectral"]), f"{row['stable_rank']:.2f}",
              f"{row['effective_rank']:.2f}", f"{fit['alpha']:.2f}" if fit else "-"]
    if has_base:
        amp = row["amplification"]
        factor = amp["factor"] if amp["factor"] is not None else math.inf
        cells += [_fmt(factor), _fmt(amp["projection"]), _fmt(amp["random_projection"]),
                  _fmt(amp["top_projection"])]
    if has_compare:
        sim = row.get("similarity")
        cells += [f"{sim['phi']:.3f}" if sim else "-", str(sim["i"]) if sim else "-"]
    if row["notes"]:
        cells.append("; ".join(row["notes"]))
    return cells


def _footnotes(report: dict, has_base: bool, has_compare: bool) -> list[str]:
    """What the columns mean, and the per-module summaries under the table."""
    config, rows = report["config"], report["matrices"]
    notes = ["s1.. = top singular values of dW = (alpha/r) B A; srank = |dW|_F^2/|dW|_2^2; "
             "erank = exp(entropy of s/sum(s))"]
    unfitted = [row for row in rows if row["power_law"] is None]
    if unfitted:
        notes.append(f"alpha (power law of the eigenvalues of dW^T dW): not fitted for {len(unfitted)} of "
                     f"{len(rows)} matrices with fewer than {report['min_evals']} nonzero eigenvalues "
                     f"(dW has rank <= r = {config['rank']})")
    if has_base:
        notes.append(f"amp = |dW|_F / |U^T W V|_F (LoRA paper Sec. 7.3), U, V = top-r singular vectors "
                     f"of dW; |UWV|, |rand|, |top| = |U^T W V|_F for dW's, random (seed "
                     f"{report.get('seed')}) and W's own top-r directions; W from {report['base']}")
        for module in MODULES:
            factors = [row["amplification"]["factor"] for row in rows if row["module"] == module]
            factors = [f for f in factors if f is not None]
            if factors:
                notes.append(f"  {module}: amplification mean {np.mean(factors):.3g}, "
                             f"min {min(factors):.3g}, max {max(factors):.3g} over {len(factors)} layers")
    if has_compare:
        comp = report["compare"]
        basis = "dW's right singular vectors" if comp["subspace"] == "delta" else "A's right singular vectors"
        notes.append(f"phi(k,k) = |U1_k^T U2_k|_F^2 / k against {comp['adapter']} (rank "
                     f"{comp['config']['rank']}), k = min of the numerical ranks, bases = {basis}")
        for key in ("only_in_adapter", "only_in_compare"):
            if comp[key]:
                notes.append(f"  not compared, {key.replace('_', ' ')}: {', '.join(comp[key])}")
    return notes


def format_table(report: dict, top: int = 3) -> str:
    """The printed report: a header, one row per matrix, and footnotes explaining the columns."""
    config = report["config"]
    rows = report["matrices"]
    lines = [f"adapter {report['adapter']}: rank {config['rank']}, alpha {config['alpha']:g} "
             f"(scaling {config['scaling']:g}), targets {','.join(config['targets'])}; "
             f"{len(rows)} matrices"]
    has_base = any("amplification" in row for row in rows)
    has_compare = "compare" in report
    header = ["layer", "module", "shape"] + [f"s{i + 1}" for i in range(top)]
    header += ["|dW|_F", "|dW|_2", "srank", "erank", "alpha"]
    if has_base:
        header += ["amp", "|UWV|", "|rand|", "|top|"]
    if has_compare:
        header += ["phi(k,k)", "k"]
    table = [header] + [_cells(row, top, has_base, has_compare) for row in rows]
    widths = [max(len(r[i]) for r in table if i < len(r)) for i in range(len(header))]
    for r in table:
        fixed = [cell.rjust(widths[i]) if i != 1 else cell.ljust(widths[i]) for i, cell in enumerate(r[: len(header)])]
        lines.append("  ".join(fixed + r[len(header):]).rstrip())
    return "\n".join(lines + [""] + _footnotes(report, has_base, has_compare))


# ---------------------------------------------------------------------------------------------
# Plot (optional matplotlib extra)
# ---------------------------------------------------------------------------------------------


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise InputError("--plot needs matplotlib: pip install 'nlg[plot]' (or pip install matplotlib)") from None


def plot_report(report: dict, path: str | os.PathLike) -> None:
    """Write `report_png` to `path`, atomically."""
    with atomic_write(path, "wb") as handle:
        handle.write(report_png(report))


def report_png(report: dict) -> bytes:
    """PNG: singular-value spectra of every ΔW, and amplification / similarity per layer."""
    _require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = report["matrices"]
    panels = ["spectra"]
    if any("amplification" in row for row in rows):
        panels.append("amplification")
    if "compare" in report:
        panels.append("similarity")
    figure = Figure(figsize=(5.5 * len(panels), 4.2), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    colours = {module: f"C{i}" for i, module in enumerate(MODULES)}
    modules = [m for m in MODULES if any(row["module"] == m for row in rows)]
    _plot_spectra(axes[0], rows, modules, colours)
    for ax, panel in zip(axes[1:], panels[1:], strict=True):
        _plot_per_layer(ax, panel, report, modules, colours)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()


def _plot_spectra(ax, rows: list[dict], modules: list[str], colours: dict[str, str]) -> None:
    """The nonzero singular values of every ΔW, one line per layer, coloured by module."""
    from matplotlib.ticker import MaxNLocator

    for module in modules:
        first = True
        for row in rows:
            s = np.asarray(row["singular_values"][: max(row["numerical_rank"], 1)])
            if row["module"] != module or s[0] <= 0:
                continue
            ax.plot(np.arange(1, s.size + 1), s, color=colours[module], alpha=0.6, marker=".",
                    label=module if first else None)
            first = False
    ax.set_yscale("log")
    ax.set_xlabel("index i")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("singular value of ΔW")
    ax.set_title("spectra of ΔW (one line per layer)")
    ax.legend()


def _plot_per_layer(ax, panel: str, report: dict, modules: list[str], colours: dict[str, str]) -> None:
    """panel "amplification" (with the random-direction control dotted) or "similarity", by layer."""
    from matplotlib.ticker import MaxNLocator

    for module in modules:
        layers, values, controls = [], [], []
        for row in report["matrices"]:
            if row["module"] != module:
                continue
            if panel == "amplification":
                amp = row["amplification"]
                if amp["factor"] is None:
                    continue
                layers.append(row["layer"])
                values.append(amp["factor"])
                controls.append(amp["random_factor"] if amp["random_factor"] is not None else math.nan)
            elif row.get("similarity"):
                layers.append(row["layer"])
                values.append(row["similarity"]["phi"])
        if not layers:
            continue
        ax.plot(layers, values, color=colours[module], marker="o", label=module)
        if panel == "amplification":
            ax.plot(layers, controls, color=colours[module], linestyle=":", marker="x",
                    label=f"{module}: random directions")
    ax.set_xlabel("layer")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if panel == "amplification":
        ax.set_yscale("log")
        ax.set_ylabel("factor")
        ax.set_title("amplification ‖ΔW‖_F / ‖UᵀWV‖_F")
    else:
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("φ(k, k)")
        other = Path(report["compare"]["adapter"])
        ax.set_title(f"subspace similarity vs {other.parent.name}/{other.name}")
    ax.legend()


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nlg analyze",
        description="Spectral analysis of a LoRA adapter: singular values, stable and effective "
                    "rank, power-law alpha, and (with --base) the LoRA paper's amplification factor, "
                    "(with --compare) its subspace similarity.")
    parser.add_argument("adapter", help="adapter directory (adapter_config.json + adapter_model.safetensors)")
    parser.add_argument(*spellings("base"), dest="base", default=None,
                        help="base checkpoint (HF directory or weights file) for the amplification factor")
    parser.add_argument(*spellings("model_card"), dest="model_card", default=None,
                        help="check the adapter fits this card (gpt2.sm, gpt2.md, ...)")
    parser.add_argument(*spellings("compare"), dest="compare", default=None,
                        help="another adapter directory: subspace similarity per matrix")
    parser.add_argument(*spellings("subspace"), dest="subspace", choices=("delta", "A"), default="delta",
                        help="bases for --compare: right singular vectors of ΔW (default) or of A (the paper)")
    parser.add_argument(*spellings("json"), dest="json", default=None, help="write the full report here")
    parser.add_argument(*spellings("plot"), dest="plot", default=None, help="write a PNG plot here")
    parser.add_argument(*spellings("min_evals"), dest="min_evals", type=int, default=10,
                        help="fit a power law only to spectra with at least this many nonzero eigenvalues")
    parser.add_argument(*spellings("top"), dest="top", type=int, default=3,
                        help="singular values printed per matrix (the JSON has all)")
    parser.add_argument(*spellings("seed"), dest="seed", type=int, default=0,
                        help="seed of the random-direction control")
    return parser


def _checkpoint_hint(directory: str) -> str:
    """Pointed at `nlg train`'s work dir instead of one of its checkpoints? Say which to use."""
    path = Path(directory)
    if not path.is_dir() or is_adapter_dir(path):
        return ""
    steps = [(step, entry) for entry in path.iterdir()
             if (step := checkpoint_step(entry)) is not None and is_adapter_dir(entry)]
    return f"; the latest checkpoint there is {max(steps)[1]}" if steps else ""


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.min_evals < 2:
        raise InputError(f"--min_evals must be at least 2, got {args.min_evals}")
    if args.plot:
        _require_matplotlib()  # fail before the work, not after
    check_outputs(inputs={"ADAPTER": adapter_paths(args.adapter), "--base": checkpoint_files(args.base),
                          "--compare": adapter_paths(args.compare)},
                  outputs={"--json": args.json, "--plot": args.plot})
    try:
        report = analyze(args.adapter, base=args.base, card=args.model_card, compare=args.compare,
                         min_evals=args.min_evals, subspace=args.subspace, seed=args.seed)
    except AdapterError as error:
        raise InputError(str(error) + _checkpoint_hint(args.adapter)) from None
    png = report_png(report) if args.plot else b""
    with atomic_files() as open_file:  # both files or neither
        if args.json:
            open_file(args.json).write(json.dumps(_json_safe(report), indent=1, allow_nan=False) + "\n")
        if args.plot:
            open_file(args.plot, "wb").write(png)
    print(format_table(report, top=max(args.top, 0)))
    for path in (args.json, args.plot):
        if path:
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
