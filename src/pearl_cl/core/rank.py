"""Proximity and rank rules of PEARL: pure functions on tensors, no training inside.

Source: PEARL (Bhat et al., arXiv 2505.11998) chooses each task's LoRA rank per layer from the
task's distance to the reference weights; the rules below are this project's reading of it
(docs/method.md says which parts are the paper's). For a layer ``l`` with reference weights ``W_ref`` and probe
displacement ``ΔW = W_probe − W_ref``, both reshaped to ``(out, in·kh·kw)``:

* ``residual``: smallest r with ‖ΔW − [ΔW]_r‖_F ≤ ε·‖W_ref‖_F;
* ``energy``: smallest r with Σ_{i≤r} σ_i² ≥ τ·Σ_i σ_i²;
* ``distance``: r = ⌈r_max · p_l / max_k p_k⌉ with proximity p_l = ‖ΔW_l‖_F / ‖W_ref,l‖_F;
* ``fixed``: the same rank for every layer (fixed-rank LoRA baseline);
* ``budget``: two steps from a task-level proximity p (:mod:`pearl_cl.core.proximity`, not ΔW):
  the task's total rank ``ceil(L · r_max · min(1, p / saturation))`` over its L layers
  (:func:`task_budget`), split over the layers by each layer's share (:func:`split_budget`).

Every rule is then clipped to ``[r_min, min(r_max, out, in·kh·kw)]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pearl_cl.errors import ConfigError

RANK_RULES = ("residual", "energy", "distance", "fixed", "budget")


@dataclass(frozen=True)
class RankRule:
    """A rank rule and its parameters (a method's config section names them; errors name the
    fields bare, e.g. ``epsilon``, for the section to prefix).

    Attributes:
        name: one of :data:`RANK_RULES`.
        r_min: lower clip (0 lets a layer go unadapted).
        r_max: upper clip, also the ``distance`` rule's largest rank.
        epsilon: ``residual`` tolerance, relative to ‖W_ref‖_F. Default 0.2, from
            ``benchmarks/ablate_rank_rule.py data.train_per_task=3000 data.test_per_task=1000``
            (split-mnist, resnet18 width 0.5, seed 0): ε = 0.05 / 0.1 / 0.2 / 0.3 gave Task-IL
            93.8 / 98.8 / 98.8 / 94.9% for 121 / 102 / 38 / 9% of the backbone's parameters added
            over four tasks. One seed on a data subset is noisy (an earlier run of the same grid
            gave 97.6 / 96.8 / 97.3 / 96.3%), so 0.2 is chosen for its cost, not its accuracy.
        tau: ``energy`` fraction of Σσ² to keep, in (0, 1].
        fixed_rank: the ``fixed`` rule's rank.
        saturation: the ``budget`` rule's proximity at which the average layer gets ``r_max``.
    """

    name: str = "residual"
    r_min: int = 0
    r_max: int = 16
    epsilon: float = 0.2
    tau: float = 0.9
    fixed_rank: int = 4
    saturation: float = 1.0

    def __post_init__(self) -> None:
        if self.name not in RANK_RULES:
            raise ConfigError(f"unknown rank rule {self.name!r}; choose one of: {', '.join(RANK_RULES)}")
        if self.r_min < 0 or self.r_max < max(self.r_min, 1):
            raise ConfigError(f"need 0 <= r_min <= r_max and r_max >= 1, got r_min={self.r_min}, r_max={self.r_max}")
        if not (math.isfinite(self.epsilon) and self.epsilon >= 0):
            raise ConfigError(f"epsilon must be finite and >= 0, got {self.epsilon}")
        if not 0.0 < self.tau <= 1.0:
            raise ConfigError(f"tau must be in (0, 1], got {self.tau}")
        if self.fixed_rank < 1:
            raise ConfigError(f"fixed_rank must be >= 1, got {self.fixed_rank}")
        if not (math.isfinite(self.saturation) and self.saturation > 0):
            raise ConfigError(f"saturation must be finite and > 0, got {self.saturation}")


def as_matrix(weight: torch.Tensor) -> torch.Tensor:
    """Reshape a Linear ``(out, in)`` or Conv ``(out, in, kh, kw)`` weight to ``(out, in·kh·kw)``."""
    return weight.reshape(weight.shape[0], -1)


def proximity(delta: torch.Tensor, reference: torch.Tensor) -> float:
    """‖ΔW‖_F / ‖W_ref‖_F (dimensionless; 0 when the probe did not move the layer)."""
    ref_norm = float(torch.linalg.matrix_norm(as_matrix(reference).double()))
    return float(torch.linalg.matrix_norm(as_matrix(delta).double())) / max(ref_norm, 1e-12)


def singular_values(delta: torch.Tensor) -> torch.Tensor:
    """Singular values of ``as_matrix(delta)`` in descending order, float64, shape ``(min(out, in),)``."""
    return torch.linalg.svdvals(as_matrix(delta).double())


def factorise(delta: torch.Tensor) -> torch.return_types.linalg_svd:
    """Thin SVD of ``as_matrix(delta)`` in float64: ``U`` ``(out, k)``, ``S`` ``(k,)`` descending,
    ``Vh`` ``(k, in·kh·kw)``, k = min(out, in·kh·kw). One factorisation serves both the rank rule
    (``S``, see :func:`allocate_ranks`) and the SVD initialisation (:mod:`pearl_cl.core.adapters`)."""
    return torch.linalg.svd(as_matrix(delta).double(), full_matrices=False)


def residual_rank(sigma: torch.Tensor, reference_norm: float, epsilon: float) -> int:
    """Smallest r with sqrt(Σ_{i>r} σ_i²) ≤ ε·‖W_ref‖_F (Eckart–Young: the rank-r residual).

    ``sigma`` is the 1-D descending spectrum of ΔW (:func:`singular_values`); ``reference_norm``
    is ‖W_ref‖_F; ``epsilon`` is dimensionless.
    The tolerance never falls below float64 round-off, σ_1·len(σ)·machine-epsilon, so that
    ε = 0 gives the numerical rank rather than counting rounding noise as directions.
    """
    floor = float(sigma.max()) * len(sigma) * torch.finfo(torch.float64).eps if len(sigma) else 0.0
    tail = torch.flip(torch.cumsum(torch.flip(sigma.double() ** 2, [0]), 0), [0])  # tail[r] = Σ_{i≥r} σ_i² (0-based)
    tail = torch.cat([tail, tail.new_zeros(1)])
    tolerance = max(epsilon * reference_norm, floor) ** 2
    return int(torch.nonzero(tail <= tolerance * (1 + 1e-12))[0])


def energy_rank(sigma: torch.Tensor, tau: float) -> int:
    """Smallest r with Σ_{i≤r} σ_i² ≥ τ·Σ σ_i² (0 for a zero matrix); ``sigma`` 1-D, descending."""
    energy = sigma.double() ** 2
    total = float(energy.sum())
    if total == 0.0:
        return 0
    kept = torch.cumsum(energy, 0)
    return int(torch.nonzero(kept >= tau * total * (1 - 1e-12))[0]) + 1


def distance_ranks(proximities: dict[str, float], r_max: int) -> dict[str, int]:
    """⌈r_max · p_l / max_k p_k⌉ for each layer (all 0 when no layer moved).

    Relative to the task's most displaced layer, so that layer always gets ``r_max`` however near
    the task is to the reference: this rule spreads a budget over layers, it does not size it
    by the task's distance (``residual`` does).
    """
    largest = max(proximities.values(), default=0.0)
    if largest <= 0.0:
        return {name: 0 for name in proximities}
    return {name: math.ceil(r_max * p / largest - 1e-9) for name, p in proximities.items()}


def task_budget(proximity: float, n_layers: int, r_max: int, saturation: float) -> int:
    """A task's total rank over its ``n_layers`` adaptable layers from its task-level proximity:
    ``ceil(n_layers · r_max · min(1, proximity / saturation))`` — no rank at proximity 0, the
    average layer at ``r_max`` once the proximity reaches ``saturation`` (our design; the mapping
    docs/method.md measures)."""
    if not proximity > 0 or n_layers == 0:
        return 0
    return math.ceil(n_layers * r_max * min(1.0, proximity / saturation) - 1e-9)


def split_budget(budget: int, shares: dict[str, float], caps: dict[str, int]) -> dict[str, int]:
    """Split a total rank ``budget`` over layers in proportion to ``shares`` (≥ 0), no layer above
    its cap (its ``min(r_max, shape)``): largest remainders round the proportional split, and what
    a capped layer cannot take goes to the others by their shares (water-filling).

    Returns layer name → rank, summing to ``min(budget, Σ caps)``; layers of share 0 get rank
    only when every layer with a share is capped. Our design.

    Raises:
        ValueError: ``shares`` and ``caps`` name different layers, or a negative share or cap.
    """
    if shares.keys() != caps.keys():
        raise ValueError(f"shares and caps name different layers: {sorted(set(shares) ^ set(caps))}")
    if any(v < 0 for v in shares.values()) or any(c < 0 for c in caps.values()):
        raise ValueError("shares and caps must be >= 0")
    ranks = {name: 0 for name in shares}
    left = min(budget, sum(caps.values()))
    while left > 0:
        open_layers = [n for n in shares if ranks[n] < caps[n]]
        weights = {n: shares[n] for n in open_layers if shares[n] > 0} or {n: 1.0 for n in open_layers}
        total = sum(weights.values())
        exact = {n: left * w / total for n, w in weights.items()}
        give = {n: min(int(math.floor(exact[n])), caps[n] - ranks[n]) for n in weights}
        spare = left - sum(give.values())
        for n in sorted(weights, key=lambda n: exact[n] - math.floor(exact[n]), reverse=True):
            if spare == 0:
                break
            if ranks[n] + give[n] < caps[n]:
                give[n] += 1
                spare -= 1
        for n, g in give.items():
            ranks[n] += g
        given = sum(give.values())
        if given == 0:
            break
        left -= given
    return ranks


def clip_rank(rank: int, rule: RankRule, shape: tuple[int, int]) -> int:
    """Clip ``rank`` to ``[r_min, min(r_max, out, in·kh·kw)]`` for a matrix of ``shape``."""
    upper = min(rule.r_max, *shape)
    return max(min(rank, upper), min(rule.r_min, upper))


@dataclass(frozen=True)
class LayerRank:
    """The rank decision for one layer of one task (a row of ``ranks.csv``).

    Attributes:
        layer: module name in the backbone.
        shape: ``(out, in·kh·kw)`` of the layer's weight as a matrix.
        proximity: ‖ΔW‖_F / ‖W_ref‖_F (dimensionless).
        rank: the clipped rank (0: the layer is not adapted for this task).
    """

    layer: str
    shape: tuple[int, int]
    proximity: float
    rank: int


def allocate_ranks(deltas: dict[str, torch.Tensor], references: dict[str, torch.Tensor], rule: RankRule,
                   spectra: dict[str, torch.Tensor] | None = None) -> dict[str, LayerRank]:
    """Choose a rank for every layer from its probe displacement.

    Args:
        deltas: layer name → ΔW (Linear ``(out, in)`` or Conv ``(out, in, kh, kw)``).
        references: layer name → W_ref, same shapes as ``deltas``.
        rule: the rank rule and its clip bounds.
        spectra: layer name → singular values of ΔW (:func:`factorise`'s ``S``) when already
            computed; :func:`singular_values` otherwise.

    Returns:
        layer name → :class:`LayerRank`, in the order of ``deltas``.

    Raises:
        ValueError: ``deltas`` and ``references`` name different layers or shapes.
    """
    if deltas.keys() != references.keys():
        raise ValueError(f"deltas and references name different layers: {sorted(set(deltas) ^ set(references))}")
    prox = {}
    for name, delta in deltas.items():
        if delta.shape != references[name].shape:
            raise ValueError(f"layer {name}: delta shape {tuple(delta.shape)} != reference shape {tuple(references[name].shape)}")
        prox[name] = proximity(delta, references[name])
    if rule.name == "budget":
        raise ValueError("the budget rule sizes ranks from a task-level proximity: use budget_ranks")
    if rule.name == "distance":
        raw = distance_ranks(prox, rule.r_max)
    elif rule.name == "fixed":
        raw = {name: rule.fixed_rank for name in deltas}
    else:
        raw = {}
        for name, delta in deltas.items():
            sigma = spectra[name] if spectra is not None else singular_values(delta)
            if rule.name == "residual":
                ref_norm = float(torch.linalg.matrix_norm(as_matrix(references[name]).double()))
                raw[name] = residual_rank(sigma, ref_norm, rule.epsilon)
            else:
                raw[name] = energy_rank(sigma, rule.tau)
    result = {}
    for name, delta in deltas.items():
        shape = tuple(as_matrix(delta).shape)
        result[name] = LayerRank(name, shape, prox[name], clip_rank(raw[name], rule, shape))
    return result


def budget_ranks(proximity: float, shares: dict[str, float], shapes: dict[str, tuple[int, int]],
                 rule: RankRule) -> dict[str, LayerRank]:
    """The ``budget`` rule: the task's total rank from its ``proximity`` (:func:`task_budget`),
    split over the layers of matrix ``shapes`` ``(out, in·kh·kw)`` by ``shares``
    (:func:`split_budget`, each layer capped at ``min(r_max, out, in·kh·kw)``), then raised to
    ``r_min`` where it is below. Each :class:`LayerRank` records the layer's share as its
    proximity.

    Raises:
        ValueError: ``shares`` and ``shapes`` name different layers.
    """
    caps = {name: min(rule.r_max, *shape) for name, shape in shapes.items()}
    ranks = split_budget(task_budget(proximity, len(shapes), rule.r_max, rule.saturation), shares, caps)
    return {name: LayerRank(name, tuple(shapes[name]), shares[name], max(ranks[name], min(rule.r_min, caps[name])))
            for name in shapes}


def fixed_rank_parameters(shapes: list[tuple[int, int]], rank: int) -> int:
    """LoRA parameters one task adds at ``rank`` on layers of matrix ``shapes`` ``(out, in·kh·kw)``:
    Σ_l min(rank, out_l, in_l)·(out_l + in_l) (the ``fixed`` rule with no clip but the shape)."""
    return sum(min(rank, *shape) * (shape[0] + shape[1]) for shape in shapes)


def matched_fixed_rank(shapes: list[tuple[int, int]], budget: float) -> int:
    """The fixed rank r ≥ 1 whose per-task LoRA parameters (:func:`fixed_rank_parameters`) come
    closest to ``budget`` (parameters per task, e.g. PEARL's mean); ties go to the smaller rank.
    Our design, for the budget-matched baseline of ``pearl-cl compare``.

    Raises:
        ValueError: ``shapes`` is empty.
    """
    if not shapes:
        raise ValueError("no adaptable layers to match a rank on")
    largest = max(min(shape) for shape in shapes)
    return min(range(1, largest + 1), key=lambda r: (abs(fixed_rank_parameters(shapes, r) - budget), r))
