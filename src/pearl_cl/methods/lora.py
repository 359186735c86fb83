"""LoRA (fixed rank): the PEARL pipeline with one rank for every layer of every task.

Source: Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models" (ICLR 2022), used as
PEARL's own baseline (Bhat et al., arXiv 2505.11998): the same reference task, probe, adapter
initialisation (``pearl.init``), per-task BatchNorm and head as :class:`~pearl_cl.methods.pearl.Pearl`,
so that the rank rule is the only difference. Every adaptable layer gets rank
``pearl.fixed_rank``, bounded only by the layer's own shape (``pearl.rank_rule``, ``r_min`` and
``r_max`` are not used). With the default ``pearl.init=svd`` the adapter starts at the probe's
best rank-r displacement, as PEARL's does; ``pearl.init=zero`` gives Hu et al.'s standard
initialisation (the probe still runs and is timed, though only SVD init uses it).
"""

from __future__ import annotations

from pearl_cl.config import RunConfig
from pearl_cl.methods.pearl import Pearl
from pearl_cl.core.rank import RankRule


class FixedRankLoRA(Pearl):
    """PEARL with the ``fixed`` rank rule at rank ``pearl.fixed_rank`` for every layer."""

    @staticmethod
    def rank_rule(config: RunConfig) -> RankRule:
        """``fixed`` at ``pearl.fixed_rank``, clipped by the layer shapes only.

        Raises:
            ConfigError: ``pearl.fixed_rank`` < 1.
        """
        rank = config.pearl.fixed_rank
        return RankRule("fixed", r_min=0, r_max=rank, fixed_rank=rank)
