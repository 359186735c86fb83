"""Fine-tune: train the whole network on each task in turn, nothing more — the lower bound.

Source: the "None" baseline of van de Ven & Tolias, "Three scenarios for continual learning"
(2019), which reports Class-IL near chance (about 20% on Split-MNIST) from catastrophic
forgetting.
"""

from __future__ import annotations

from pearl_cl.methods.single_head import SingleHead
from pearl_cl.registry import METHODS


@METHODS.register("finetune")
class Finetune(SingleHead):
    """Sequential training with the expanding head and no protection of earlier tasks."""

    marker = "v"
    order = 10
