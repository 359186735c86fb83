"""The run config: one typed, nested dataclass read from YAML and ``--set key=value`` overrides.

Our design. Keys are dotted paths (``pearl.rank_rule``, ``train.epochs``); a key that does not
exist is rejected with the closest real key suggested, never ignored. The resolved config is
saved as ``config.yaml`` in every run directory, so a run can be repeated from it.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from pearl_cl.backbones import build_backbone
from pearl_cl.errors import ConfigError
from pearl_cl.core.rank import RankRule
from pearl_cl.engine.training import FitSettings


@dataclass
class DataConfig:
    """Where the data comes from and how tasks are split.

    ``root``: torchvision layout folder (None: offline packages only); ``download``: allow a
    torchvision download; ``val_fraction``: share of each task's training images held out for
    validation; ``shuffle_classes``: permute the class order with the seed;
    ``train_per_task`` / ``test_per_task``: cap images per task (None: all).
    """

    root: str | None = None
    download: bool = False
    val_fraction: float = 0.1
    shuffle_classes: bool = False
    train_per_task: int | None = None
    test_per_task: int | None = None


@dataclass
class BackboneConfig:
    """``name``: one of :data:`~pearl_cl.backbones.BACKBONES`; ``width``: channel / unit multiplier
    (resnet18 base is 20 channels); ``pretrained``: a checkpoint (.safetensors / .pth) to start
    from, ``imagenet`` for efficientnet-lite0's packaged weights, or None (random initialisation)."""

    name: str = "resnet18"
    width: float = 0.5
    pretrained: str | None = None

    def build(self, image_shape: tuple[int, int, int]) -> nn.Module:
        """The backbone for ``image_shape`` = (C, H, W) images (:func:`pearl_cl.backbones.build_backbone`).

        Raises:
            ConfigError: see :func:`~pearl_cl.backbones.build_backbone`.
        """
        return build_backbone(self.name, image_shape, self.width, self.pretrained)


@dataclass
class TrainConfig:
    """Optimisation of every task: ``epochs`` for adapter tasks (and every later task of the
    baselines), ``reference_epochs`` for the first task; ``iterations``, when set, replaces both
    with a fixed number of optimiser steps per task (the probe still counts ``probe_epochs``);
    ``optimizer``: adam | sgd; ``lr`` (full-weight training) and ``adapter_lr`` (LoRA adapters)
    and ``weight_decay`` per step; ``augment``: none | crop_flip (random crop after 4-pixel padding
    and horizontal flip of every training batch, :mod:`pearl_cl.data.augment`; for 32×32 RGB)."""

    epochs: int = 1
    reference_epochs: int = 1
    iterations: int | None = None
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 0.001
    adapter_lr: float = 0.003
    weight_decay: float = 0.0
    momentum: float = 0.9
    augment: str = "none"


@dataclass
class PearlConfig:
    """PEARL knobs (DESIGN.md §2): probe, rank rule and adapter initialisation.

    The rank-rule defaults are those of :class:`~pearl_cl.core.rank.RankRule`, which documents them.
    """

    probe: str = "finetune"
    probe_epochs: int = 1
    rank_rule: str = RankRule.name
    r_min: int = RankRule.r_min
    r_max: int = RankRule.r_max
    epsilon: float = RankRule.epsilon
    tau: float = RankRule.tau
    fixed_rank: int = RankRule.fixed_rank
    init: str = "svd"

    def to_rank_rule(self) -> RankRule:
        """The validated :class:`~pearl_cl.core.rank.RankRule` these knobs describe.

        Raises:
            ConfigError: unknown rule or bounds out of range.
        """
        return RankRule(self.rank_rule, self.r_min, self.r_max, self.epsilon, self.tau, self.fixed_rank)


@dataclass
class RoutingConfig:
    """Class- and domain-incremental inference (DESIGN.md §2 step 6, :mod:`pearl_cl.routing`):
    ``router`` picks the task of an unlabelled image; ``shrinkage`` in [0, 1] regularises the
    covariances of the Mahalanobis routers."""

    router: str = "mahalanobis"
    shrinkage: float = 0.001


@dataclass
class BaselinesConfig:
    """Hyperparameters of the baselines (:mod:`pearl_cl.methods`), defaults from the literature.

    The EWC and SI values are van de Ven & Tolias' Split-MNIST task-incremental settings for the
    protocol of :data:`PROTOCOLS` (``param_values.py`` of github.com/GMvandeVen/continual-learning,
    2019): online EWC λ = 1e8 with decay γ = 0.8, SI c = 50 with damping ξ = 0.1. Their
    class-incremental settings differ (λ = 1e9, SI c = 0.5) but leave Class-IL near chance all the
    same, so one training per run uses the Task-IL values. LwF: temperature 2 and distillation
    weight 1 (Li & Hoiem, "Learning without Forgetting", 2016, T = 2, λ_o = 1).

    ``ewc_lambda`` ≥ 0, ``ewc_gamma`` in [0, 1], ``fisher_samples`` (images per task for EWC's
    Fisher; None: all training images), ``si_c`` ≥ 0, ``si_xi`` > 0, ``lwf_temperature`` > 0,
    ``lwf_alpha`` ≥ 0.
    """

    ewc_lambda: float = 1e8
    ewc_gamma: float = 0.8
    fisher_samples: int | None = None
    si_c: float = 50.0
    si_xi: float = 0.1
    lwf_temperature: float = 2.0
    lwf_alpha: float = 1.0

    def check(self) -> None:
        """Raise :class:`ConfigError` naming the first key out of range."""
        valid = {"ewc_lambda": self.ewc_lambda >= 0, "ewc_gamma": 0 <= self.ewc_gamma <= 1,
                 "fisher_samples": self.fisher_samples is None or self.fisher_samples >= 1,
                 "si_c": self.si_c >= 0, "si_xi": self.si_xi > 0,
                 "lwf_temperature": self.lwf_temperature > 0, "lwf_alpha": self.lwf_alpha >= 0}
        for name, ok in valid.items():
            value = getattr(self, name)
            if not ok or (isinstance(value, float) and not math.isfinite(value)):
                raise ConfigError(f"baselines.{name} is out of range, got {value!r}; the README's config table gives "
                                  f"its range and default")


@dataclass
class GuardConfig:
    """The validation guard (our design): after a task trains, its validation accuracy must reach
    ``min_val_accuracy`` (%, None: no floor) and its loss must stay finite. A task that fails is
    rolled back (the learner is rebuilt from the run directory, whose earlier tasks are
    untouched); with ``retry`` a method with ranks (pearl, lora) retries it once with every rank
    multiplied by ``rank_factor``, otherwise the run stops and reports the failure."""

    min_val_accuracy: float | None = None
    retry: bool = True
    rank_factor: int = 2

    def check(self) -> None:
        """Raise :class:`ConfigError` naming the first key out of range."""
        floor = self.min_val_accuracy
        if floor is not None and not (math.isfinite(floor) and 0 <= floor <= 100):
            raise ConfigError(f"guard.min_val_accuracy must be a percentage in [0, 100] or null, got {floor}")
        if self.rank_factor < 2:
            raise ConfigError(f"guard.rank_factor must be >= 2 (the retry's ranks are multiplied by it), got {self.rank_factor}")


@dataclass
class RunConfig:
    """Everything a run needs; ``out`` is the run directory (None: ``runs/<name>-<time>``)."""

    benchmark: str = "split-mnist"
    method: str = "pearl"
    seed: int = 0
    out: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    pearl: PearlConfig = field(default_factory=PearlConfig)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    baselines: BaselinesConfig = field(default_factory=BaselinesConfig)
    guard: GuardConfig = field(default_factory=GuardConfig)

    def to_dict(self) -> dict[str, Any]:
        """Nested plain dict (YAML- and JSON-ready)."""
        return dataclasses.asdict(self)

    def get(self, key: str) -> Any:
        """The value at dotted ``key`` (e.g. ``"train.lr"``)."""
        value: Any = self
        for name in key.split("."):
            value = getattr(value, name)
        return value

    def fit_settings(self, epochs_key: str, lr_key: str, iterations: bool = True) -> FitSettings:
        """Validated :class:`~pearl_cl.engine.training.FitSettings` with the epochs and step size found at
        the dotted keys ``epochs_key`` and ``lr_key`` (e.g. ``"pearl.probe_epochs"``,
        ``"train.lr"``) and the rest of ``train``; ``train.iterations`` applies unless
        ``iterations`` is False (the probe); error messages name those keys.

        Raises:
            ConfigError: a value out of range (names the key).
        """
        t = self.train
        return FitSettings(self.get(epochs_key), t.batch_size, self.get(lr_key), t.optimizer, t.weight_decay,
                           t.momentum, names=(epochs_key, lr_key), iterations=t.iterations if iterations else None,
                           augment=t.augment)


PROTOCOLS: dict[str, dict[str, Any]] = {
    "classic-split-mnist": {
        "backbone.name": "mlp", "backbone.width": 1.0, "train.optimizer": "adam", "train.lr": 0.001,
        "train.batch_size": 128, "train.iterations": 2000,
    },
}
"""Named protocols: config values applied before the file and overrides. ``classic-split-mnist``
is the Split-MNIST protocol of Hsu et al. (2018) and van de Ven & Tolias (2019): an MLP with two
hidden layers of 400 ReLU units, Adam with lr 0.001, batches of 128, 2,000 iterations per task.
(Both train on all 60,000 training images; ours hold ``data.val_fraction`` out for validation.)"""


def _leaf_types(cls: type, prefix: str = "") -> dict[str, Any]:
    """Dotted key → annotated type of every leaf field of dataclass ``cls``."""
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            out.update(_leaf_types(kind, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = kind
    return out


KEYS: dict[str, Any] = _leaf_types(RunConfig)


def _unknown_key(key: str) -> ConfigError:
    section = [k for k in KEYS if k.startswith(key + ".")]
    if section:
        return ConfigError(f"config key {key!r} is a section, not a value; set one of its keys, e.g. {section[0]}=...")
    close = difflib.get_close_matches(key, list(KEYS), n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(KEYS)}"
    return ConfigError(f"unknown config key {key!r}{hint}")


def _coerce(key: str, value: Any, kind: Any) -> Any:
    """Check ``value`` against the annotated ``kind`` (int, float, bool, str, or ``X | None``)."""
    args = typing.get_args(kind)
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        if value is None:
            return None
        kind = next(a for a in args if a is not type(None))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is float and isinstance(value, str):
        try:
            return float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string
        except ValueError:
            pass
    if kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"config key {key!r} needs a value of type {kind.__name__}, got {value!r}")
    return value


def apply(config: RunConfig, key: str, value: Any) -> None:
    """Set dotted ``key`` of ``config`` to ``value`` in place.

    Raises:
        ConfigError: unknown key (with a did-you-mean) or a value of the wrong type.
    """
    if key not in KEYS:
        raise _unknown_key(key)
    *parents, leaf = key.split(".")
    target: Any = config
    for name in parents:
        target = getattr(target, name)
    setattr(target, leaf, _coerce(key, value, KEYS[key]))


def _flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and not any(k == dotted for k in KEYS):
            out.update(_flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``"key=value"``; the value is read as YAML (``3`` → int, ``null`` → None).

    Raises:
        ConfigError: no ``=``, an empty key, or a value that is not valid YAML.
    """
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"malformed --set {text!r}: write --set key=value, e.g. --set train.epochs=2")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"malformed --set {text!r}: the value is not valid YAML ({exc.problem})") from exc
    return key.strip(), value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, protocol: str | None = None,
                **values: Any) -> RunConfig:
    """The defaults, then the named ``protocol`` (a key of :data:`PROTOCOLS`), then the YAML
    file at ``path``, then ``overrides`` (``"key=value"``), then ``values`` given as keyword
    arguments with ``__`` for dots (``pearl__rank_rule="energy"``).

    Raises:
        ConfigError: unreadable file, unknown protocol or key, malformed override or wrongly
            typed value.
    """
    config = RunConfig()
    if protocol is not None:
        if protocol not in PROTOCOLS:
            raise ConfigError(f"unknown protocol {protocol!r}; choose one of: {', '.join(PROTOCOLS)}")
        for key, value in PROTOCOLS[protocol].items():
            apply(config, key, value)
    if path is not None:
        path = Path(path)
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of keys, got {type(loaded).__name__}")
        for key, value in _flatten(loaded).items():
            apply(config, key, value)
    for text in overrides or []:
        apply(config, *parse_override(text))
    for key, value in values.items():
        apply(config, key.replace("__", "."), value)
    return config


def save_config(config: RunConfig) -> str:
    """``config`` as YAML text, in the nested form :func:`load_config` reads back."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
