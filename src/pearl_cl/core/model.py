"""The continual model: one backbone, one head per task, task branches selected by name.

Our design. The backbone holds the reference weights W_ref; once
the first adapter is added it becomes a ``peft.PeftModel`` holding one named LoRA adapter and one
copy of every BatchNorm per later task (see :mod:`pearl_cl.core.adapters`). The reference task's
branch is the bare backbone with its own BatchNorm and head. PEFT is imported when first
needed, so that reading a config or a run directory does not load it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from pearl_cl import device
from pearl_cl.backbones import adaptable_layers, norm_layers

if TYPE_CHECKING:
    from peft import PeftModel


class ContinualModel(nn.Module):
    """Backbone plus per-task heads.

    ``forward(x, task)`` maps ``(N, C, H, W)`` images to ``(N, n_classes(task))`` logits using
    task ``task``'s branch: the reference branch (adapters disabled, reference BatchNorm) when
    ``task == reference_task``, else that task's adapter and BatchNorm.
    """

    def __init__(self, backbone: nn.Module, reference_task: str = "task1") -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleDict()
        self.reference_task = reference_task
        self.feature_dim: int = backbone.feature_dim
        self.layer_names: list[str] = list(adaptable_layers(backbone))
        self.norm_names: list[str] = norm_layers(backbone)

    def add_head(self, task: str, n_classes: int) -> nn.Linear:
        """Create task ``task``'s head, a Linear ``(feature_dim → n_classes)``."""
        head = nn.Linear(self.feature_dim, n_classes).to(device.current())
        self.heads[task] = head
        return head

    @property
    def peft(self) -> PeftModel | None:
        """The PEFT wrapper once an adapter exists, else None."""
        from peft import PeftModel

        return self.backbone if isinstance(self.backbone, PeftModel) else None

    def reference_backbone(self) -> nn.Module:
        """The plain backbone module that holds W_ref (inside the PEFT wrapper if there is one)."""
        return self.peft.get_base_model() if self.peft is not None else self.backbone

    def _has_adapter_layers(self) -> bool:
        """Whether any LoRA layer or per-task BatchNorm copy exists (PEFT refuses to disable none)."""
        from peft.tuners.tuners_utils import BaseTunerLayer
        from peft.utils import AuxiliaryTrainingWrapper

        return any(isinstance(m, (BaseTunerLayer, AuxiliaryTrainingWrapper)) for m in self.backbone.modules())

    def features(self, x: torch.Tensor, task: str) -> torch.Tensor:
        """``(N, C, H, W)`` → ``(N, feature_dim)`` through task ``task``'s branch.

        Raises:
            KeyError: ``task`` has no branch (names the known ones).
        """
        if self.peft is None:
            if task != self.reference_task:
                raise KeyError(f"task {task!r} has no adapter; only the reference task {self.reference_task!r} exists")
            return self.backbone(x)
        if task == self.reference_task:
            if not self._has_adapter_layers():
                return self.backbone(x)  # every adapter so far is empty: the backbone is the reference
            with self.peft.disable_adapter():
                return self.backbone(x)
        if task not in self.peft.peft_config:
            raise KeyError(f"task {task!r} has no adapter; known: {sorted(self.peft.peft_config)}")
        if self.peft.active_adapter != task:
            self.peft.set_adapter(task)
        return self.backbone(x)

    def forward(self, x: torch.Tensor, task: str) -> torch.Tensor:
        """``(N, C, H, W)`` → ``(N, n_classes(task))`` logits of task ``task``'s branch and head."""
        return self.heads[task](self.features(x, task))
