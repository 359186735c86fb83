"""Continual-learning methods, one file each; :data:`METHODS` maps config names to classes.

Every method has the interface of :class:`~pearl_cl.methods.pearl.Pearl`: built from
``(config, image_shape, n_classes)``; ``learn(task, seed)`` → :class:`TaskRecord`;
``count_correct(task, x, y)`` (Task-IL); ``route(x, true_task, router)`` → predicted global
classes and chosen task indices (no task label); ``evaluate(tasks, router)`` → per-task test counts
(:class:`~pearl_cl.engine.evaluation.TaskCounts`); ``task_tensors(task)``; ``records``;
``backbone_parameters``; ``identifies_tasks`` (whether ``route`` picks a task per image).
"""

from pearl_cl.methods.ewc import EWC
from pearl_cl.methods.finetune import Finetune
from pearl_cl.methods.joint import Joint
from pearl_cl.methods.lora import FixedRankLoRA
from pearl_cl.methods.lwf import LwF
from pearl_cl.methods.pearl import Pearl
from pearl_cl.methods.record import TaskRecord
from pearl_cl.methods.separate import SeparateNetworks
from pearl_cl.methods.si import SI

METHODS = {"pearl": Pearl, "lora": FixedRankLoRA, "finetune": Finetune, "joint": Joint, "ewc": EWC, "si": SI,
           "lwf": LwF, "separate": SeparateNetworks}

__all__ = ["METHODS", "EWC", "Finetune", "FixedRankLoRA", "Joint", "LwF", "Pearl", "SI", "SeparateNetworks", "TaskRecord"]
