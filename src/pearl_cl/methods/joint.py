"""Joint: train on the data of every task seen so far at once — the upper bound.

Source: the "Offline" upper bound of van de Ven & Tolias, "Three scenarios for continual
learning" (2019): at task t the network keeps training on the union of tasks 1..t. With
``train.iterations`` (their protocol) every task gets the same number of steps as in the
sequential methods; with epochs, each epoch covers all data seen so far, so task t takes about
t times the steps. It stores every image it has seen, so it is neither rehearsal-free nor a
continual learner; it shows what the network could reach.
"""

from __future__ import annotations

import torch

from pearl_cl.data.benchmarks import TaskData
from pearl_cl.data.pixels import NormalisedImages
from pearl_cl.methods.single_head import SingleHead
from pearl_cl.registry import METHODS


@METHODS.register("joint")
class Joint(SingleHead):
    """The expanding-head network trained on all data seen so far after every new task."""

    marker = "^"
    order = 20

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.images: list[NormalisedImages] = []
        self.labels: list[torch.Tensor] = []

    def training_data(self, task: TaskData) -> tuple[NormalisedImages, torch.Tensor]:
        """Stores ``task``'s training data, then returns tasks 1..t's training images
        ``(ΣN, C, H, W)`` and global class ids ``(ΣN,)`` (called once per task)."""
        self._remember(task)
        return NormalisedImages.cat(self.images), torch.cat(self.labels)

    def _remember(self, task: TaskData) -> None:
        """Store ``task``'s training images and global labels."""
        x, y = super().training_data(task)
        self.images.append(x)
        self.labels.append(y)

    def restore_state(self, task: TaskData, tensors: dict[str, torch.Tensor]) -> None:
        """Store ``task``'s data again, from the benchmark (the task file holds no images)."""
        self._remember(task)

    def state_numbers(self) -> int:
        """Every stored pixel and label."""
        return sum(x.numel() for x in self.images) + sum(len(y) for y in self.labels)
