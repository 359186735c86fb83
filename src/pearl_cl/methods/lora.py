"""LoRA (fixed rank): the PEARL pipeline with one rank for every layer of every task.

Source: Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models" (ICLR 2022), used as
PEARL's own baseline (Bhat et al., arXiv 2505.11998): the same reference task, probe, adapter
initialisation (``pearl.init``), per-task BatchNorm and head as :class:`~pearl_cl.methods.pearl.Pearl`,
so that the rank rule is the only difference. Every adaptable layer gets rank ``lora.rank``,
bounded only by the layer's own shape (``pearl.rank_rule``, ``r_min`` and ``r_max`` are not
used). With the default ``pearl.init=svd`` the adapter starts at the probe's best rank-r
displacement, as PEARL's does; ``pearl.init=zero`` gives Hu et al.'s standard initialisation
(the probe still runs and is timed, though only SVD init uses it).

In ``pearl-cl compare``, ``lora-rK`` is this method at ``lora.rank=K`` and ``lora-matched`` is
it at the rank whose adapter parameters come closest to what the rank-choosing method listed
before it added per task in the same seed (:func:`~pearl_cl.core.rank.matched_fixed_rank`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from pearl_cl.config import RunConfig
from pearl_cl.core.rank import RankRule, matched_fixed_rank
from pearl_cl.errors import ConfigError
from pearl_cl.methods.pearl import Pearl
from pearl_cl.registry import METHODS


@dataclass
class LoraConfig:
    """Fixed-rank LoRA: ``rank`` ≥ 1 for every adapted layer (bounded by the layer's shape)."""

    LEGACY: ClassVar[dict[str, str]] = {"pearl.fixed_rank": "rank"}
    rank: int = RankRule.fixed_rank

    def check(self, config: RunConfig) -> None:
        """Raise :class:`ConfigError` when ``lora.rank`` < 1."""
        if self.rank < 1:
            raise ConfigError(f"lora.rank must be >= 1, got {self.rank}")


@METHODS.register("lora")
class FixedRankLoRA(Pearl):
    """PEARL with the ``fixed`` rank rule at rank ``lora.rank`` for every layer."""

    config_section = LoraConfig
    chooses_ranks = False
    joined_in_plots = True
    marker, marker_size = "o", 8
    order = 70

    @classmethod
    def rank_rule(cls, config: RunConfig) -> RankRule:
        """``fixed`` at ``lora.rank``, clipped by the layer shapes only."""
        rank = config.sections[cls.name].rank
        return RankRule("fixed", r_min=0, r_max=rank, fixed_rank=rank)

    @classmethod
    def compare_labels(cls) -> list[str]:
        """Ranks 1, 4 and 16, and the matched rank."""
        return [f"{cls.name}-r1", f"{cls.name}-r4", f"{cls.name}-r16", cls.matched_variant()]

    @classmethod
    def variant_help(cls) -> str:
        """``<name>-rK (rank K >= 1), <name>-matched``."""
        return f"{cls.name}-rK (rank K >= 1), {cls.matched_variant()} (after a rank-choosing method)"

    @classmethod
    def variant(cls, label: str) -> dict[str, Any] | None:
        """``<name>-rK`` → ``{"<name>.rank": K}``."""
        fixed = re.fullmatch(rf"{re.escape(cls.name)}-r([1-9]\d*)", label)
        return {f"{cls.name}.rank": int(fixed.group(1))} if fixed else None

    @classmethod
    def matched_variant(cls) -> str:
        """``<name>-matched``."""
        return f"{cls.name}-matched"

    @classmethod
    def matched_values(cls, budget_run: Any) -> dict[str, Any]:
        """``{"<name>.rank": r}`` with r the fixed rank closest to the mean LoRA parameters
        ``budget_run`` added per adapter task (rank 1 when it learned no adapter task)."""
        later = [r for r in budget_run.records if not r.reference]
        if not later:
            return {f"{cls.name}.rank": 1}
        shapes = [lr.shape for lr in later[0].ranks.values()]
        per_task = float(np.mean([r.parameters["adapter"] for r in later]))
        return {f"{cls.name}.rank": matched_fixed_rank(shapes, per_task) if shapes else 1}

    @classmethod
    def setting(cls, config: RunConfig) -> str:
        """``r=K``."""
        return f"r={config.sections[cls.name].rank}"
