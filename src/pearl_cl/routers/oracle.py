"""``oracle``: the true task label — an upper bound for tests and tables, not a router a
deployment can use (our design)."""

from __future__ import annotations

from typing import Callable

import torch

from pearl_cl.registry import ROUTERS
from pearl_cl.routers.base import Router
from pearl_cl.routers.statistics import TaskStatistics


@ROUTERS.register("oracle")
class Oracle(Router):
    """Chooses the true task."""

    per_branch = False

    def choose(self, x: torch.Tensor, ref_features: Callable[[], torch.Tensor], stats: list[TaskStatistics],
               routing, true_task: torch.Tensor | None) -> torch.Tensor:
        """``true_task`` itself.

        Raises:
            ValueError: ``true_task`` is None.
        """
        if true_task is None:
            raise ValueError(f"the {self.name} router needs the true task of each image")
        return true_task
