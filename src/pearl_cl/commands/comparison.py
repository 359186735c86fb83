"""What a comparison is made of: the method labels of ``pearl-cl compare`` and a finished
comparison's rows (our design). Shared by :mod:`pearl_cl.commands.compare`, which runs one,
and :mod:`pearl_cl.commands.report`, which reads one; it names no method: labels are resolved
through the method registry (a method's own name, or a variant it declares, such as a fixed
rank or a rank matched to another method's parameter budget)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pearl_cl.errors import ConfigError
from pearl_cl.registry import METHODS


@dataclass(frozen=True)
class MethodSpec:
    """One row of a comparison: its ``label``, the registered ``method`` it runs, the config
    ``values`` the label stands for (``{"lora.rank": 4}``), for a matched variant the label
    of the rank-choosing spec whose parameter budget it matches (``budget``), and the
    ``scenario`` it is trained for when a comparison runs several (None: the base config's)."""

    label: str
    method: str
    values: dict[str, Any] = field(default_factory=dict)
    budget: str | None = None
    scenario: str | None = None

    @property
    def key(self) -> str:
        """The spec's name in the comparison: ``label``, or ``label-scenario``."""
        return f"{self.label}-{self.scenario}" if self.scenario else self.label


def per_scenario(specs: list[MethodSpec], scenarios: list[str]) -> list[MethodSpec]:
    """``specs`` with each single-head method's spec repeated once per scenario (it is trained
    differently in each); a method with a branch per task stays one spec, since one run of it
    reports every scenario."""
    out: list[MethodSpec] = []
    for spec in specs:
        if METHODS.get(spec.method).single_head:
            out += [MethodSpec(spec.label, spec.method, spec.values, spec.budget, scenario) for scenario in scenarios]
        else:
            out.append(spec)
    return out


def ordered_methods() -> list[tuple[str, type]]:
    """The registered methods as ``(name, class)`` in their :attr:`~pearl_cl.methods.learner.Learner.order`."""
    return sorted(METHODS.items(), key=lambda item: (item[1].order, item[0]))


def default_methods() -> str:
    """Every registered method's default comparison labels, in method order, matched variants last."""
    labels = [label for _, cls in ordered_methods() for label in cls.compare_labels()]
    matched = {cls.matched_variant() for _, cls in METHODS.items()}
    return ",".join([label for label in labels if label not in matched] + [label for label in labels if label in matched])


def parse_methods(text: str) -> list[MethodSpec]:
    """``"finetune,lora-r4,pearl,lora-matched"`` → specs, in the given order.

    Raises:
        ConfigError: an unknown or repeated name, an empty list, or a matched variant without a
            rank-choosing method before it.
    """
    labels = [part.strip() for part in text.split(",") if part.strip()]
    if not labels:
        raise ConfigError(f"--methods is empty; give a comma-separated list, e.g. --methods {default_methods()}")
    specs: list[MethodSpec] = []
    for label in labels:
        if label in [s.label for s in specs]:
            raise ConfigError(f"--methods names {label!r} twice")
        specs.append(_spec(label, specs))
    return specs


def budget_labels(specs: list[MethodSpec]) -> list[str]:
    """The labels of ``specs`` that run a rank-choosing method at its own settings: the runs a
    matched variant can take its parameter budget from."""
    return [s.label for s in specs if METHODS.get(s.method).chooses_ranks and not s.values]


def _spec(label: str, before: list[MethodSpec]) -> MethodSpec:
    if label in METHODS:
        return MethodSpec(label, label)
    for name, cls in METHODS.items():
        values = cls.variant(label)
        if values is not None:
            return MethodSpec(label, name, values)
        if label == cls.matched_variant():
            choosers = budget_labels(before)
            if not choosers:
                names = [n for n, c in METHODS.items() if c.chooses_ranks]
                raise ConfigError(f"{label} matches the parameters of a rank-choosing method: list one of "
                                  f"{', '.join(names)} before it in --methods")
            return MethodSpec(label, name, budget=choosers[-1])
    variants = [cls.variant_help() for _, cls in METHODS.items() if cls.variant_help()]
    raise ConfigError(f"unknown method {label!r} in --methods; choose from: {', '.join(n for n, _ in ordered_methods())}"
                      + (f", {', '.join(variants)}" if variants else ""))


@dataclass
class Comparison:
    """A finished comparison: its directory, one row per run, one aggregated row per method."""

    directory: Path
    runs: list[dict[str, Any]]
    methods: list[dict[str, Any]]
