"""Continual-learning methods, one file each; :data:`METHODS` maps config names to classes."""

from pearl_cl.methods.pearl import Pearl, TaskRecord

METHODS = {"pearl": Pearl}

__all__ = ["METHODS", "Pearl", "TaskRecord"]
