"""The run config: one typed, nested dataclass read from YAML and ``--set key=value`` overrides.

Our design. Keys are dotted paths (``train.epochs``, ``pearl.rank_rule``); a key that does not
exist is rejected with the closest real key suggested, never ignored. The sections ``data``,
``backbone``, ``train``, ``routing``, ``guard`` and ``logging`` are the engine's, declared here;
every method's hyper-parameters are its own section, declared next to the method
(:attr:`~pearl_cl.methods.learner.Learner.config_section`) and found through the method
registry. :func:`validate` checks a whole config in one place. The resolved config is saved as
``config.yaml`` in every run directory, so a run can be repeated from it. This module does not
import PyTorch.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import textwrap
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pearl_cl.errors import ConfigError
from pearl_cl.registry import BACKBONES, BENCHMARKS, METHODS, ROUTERS

if typing.TYPE_CHECKING:
    from torch import nn

    from pearl_cl.learning.training import FitSettings


@dataclass
class DataConfig:
    """Where the data comes from and how tasks are split.

    ``root``: torchvision layout folder (None: offline packages only); ``download``: allow a
    torchvision download; ``val_fraction``: share of each task's training images held out for
    validation; ``shuffle_classes``: permute the class order with the seed; ``class_order``: how
    (``seeded``: our seeded generator; ``van-de-ven``: as the code of van de Ven & Tolias (2019)
    deals the digits, :func:`~pearl_cl.data.benchmarks.class_order`);
    ``train_per_task`` / ``test_per_task``: cap images per task (None: all);
    ``first_task_classes`` / ``classes_per_task``: re-cut a class-split benchmark into a first
    task of that many classes and later tasks of ``classes_per_task`` (None: the benchmark's own);
    ``standardise``: scale pixels to [0, 1] and standardise them with the benchmark's per-channel
    mean and std (False: only scale to [0, 1], as torchvision's ``ToTensor``); ``workers``: processes
    that decode the images of benchmarks read from image files (image folders, TinyImageNet) while
    training (0: the training process itself); the batches are the same for any number.
    """

    root: str | None = None
    download: bool = False
    val_fraction: float = 0.1
    shuffle_classes: bool = False
    class_order: str = "seeded"
    train_per_task: int | None = None
    test_per_task: int | None = None
    first_task_classes: int | None = None
    classes_per_task: int | None = None
    standardise: bool = True
    workers: int = 0


@dataclass
class BackboneConfig:
    """``name``: one of :data:`~pearl_cl.backbones.BACKBONES`; ``width``: channel / unit multiplier
    (resnet18 base is 20 channels); ``pretrained``: a checkpoint (.safetensors / .pth) to start
    from, ``imagenet`` for efficientnet-lite0's packaged weights, or None (random initialisation)."""

    name: str = field(default_factory=lambda: BACKBONES.default())
    width: float = 0.5
    pretrained: str | None = None

    def build(self, image_shape: tuple[int, int, int]) -> nn.Module:
        """The backbone for ``image_shape`` = (C, H, W) images (:func:`pearl_cl.backbones.build_backbone`).

        Raises:
            ConfigError: see :func:`~pearl_cl.backbones.build_backbone`.
        """
        from pearl_cl.backbones import build_backbone

        return build_backbone(self.name, image_shape, self.width, self.pretrained)


@dataclass
class TrainConfig:
    """Optimisation of every task: ``epochs`` for adapter tasks (and every later task of the
    baselines), ``reference_epochs`` for the first task; ``iterations``, when set, replaces both
    with a fixed number of optimiser steps per task (the probe still counts ``probe_epochs``);
    ``optimizer``: adam | sgd; ``lr`` (full-weight training) and ``adapter_lr`` (LoRA adapters)
    and ``weight_decay`` per step; ``augment``: none | crop_flip (random crop after 4-pixel padding
    and horizontal flip of every training batch, :mod:`pearl_cl.data.augment`; for 32×32 RGB);
    ``reset_optimizer``: start every task with a fresh optimiser (False: one optimiser, its state
    — Adam's moment estimates, SGD's momentum — carried from task to task, as the Split-MNIST
    protocol of van de Ven & Tolias (2019) does). It applies to the methods that train the same
    weights on every task (the single-head ones); a method that trains new adapters for each task
    gives each a fresh optimiser. ``device``: auto | cpu | cuda | cuda:N | mps, where the network,
    its state and every batch live (auto: CUDA, then MPS, then CPU); ``precision``: fp32, or bf16 /
    fp16 autocast on CUDA (:mod:`pearl_cl.device`)."""

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
    reset_optimizer: bool = False
    device: str = "auto"
    precision: str = "fp32"


@dataclass
class RoutingConfig:
    """Class- and domain-incremental inference (:mod:`pearl_cl.routers`): ``router`` picks the
    task of an unlabelled image (default: the registered default router); ``shrinkage`` in
    [0, 1] regularises the covariances of the Gaussian routers; ``sample``: how many of a
    task's training images go through the network for the router statistics (None: all);
    ``random_features``: width M of the ``likelihood-ratio`` router's random-feature space;
    ``fit_all``: keep every registered router's statistics (to compare routers on one model),
    not only ``router``'s."""

    router: str = field(default_factory=lambda: ROUTERS.default())
    shrinkage: float = 0.001
    sample: int | None = 2000
    random_features: int = 2000
    fit_all: bool = False


@dataclass
class GuardConfig:
    """The validation guard (our design): after a task trains, its validation accuracy must reach
    ``min_val_accuracy`` (%, None: no floor) and its loss must stay finite. A task that fails is
    rolled back (the learner is rebuilt from the run directory, whose earlier tasks are
    untouched); with ``retry`` a method with ranks retries it once with every rank
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
class LoggingConfig:
    """Per-step logs of every fit (:mod:`pearl_cl.engine.loggers`): ``steps.csv`` is always
    written; ``tensorboard`` also writes TensorBoard event files under ``tensorboard/`` (needs
    the optional extra ``pip install 'pearl-cl[tensorboard]'``)."""

    tensorboard: bool = False


def section_classes() -> dict[str, type]:
    """Method name → the dataclass of its hyper-parameter section, for every registered method
    that declares one itself (a subclass does not inherit its parent's section)."""
    return {name: cls.__dict__["config_section"] for name, cls in METHODS.items() if cls.__dict__.get("config_section")}


def method_sections() -> dict[str, Any]:
    """A fresh instance of every registered method's hyper-parameter section, by method name."""
    return {name: section() for name, section in section_classes().items()}


@dataclass
class RunConfig:
    """Everything a run needs; ``out`` is the run directory (None: ``runs/<name>-<time>``);
    ``method`` defaults to the registered default method; ``scenario`` is what the single-head
    methods are trained for (:data:`SCENARIOS`; None: the benchmark's own, ``class-il`` or
    ``domain-il``): ``task-il`` trains each task over its own classes' output units only,
    ``domain-il`` one shared set of units over the tasks' local labels, ``class-il`` every class
    seen so far (van de Ven & Tolias, "Three scenarios for continual learning", 2019); methods
    with a branch per task train alike in every scenario. ``sections`` holds each registered
    method's hyper-parameters by method name; ``config.<method>`` reads one
    (``config.ewc.lambda_``)."""

    benchmark: str = field(default_factory=lambda: BENCHMARKS.default())
    method: str = field(default_factory=lambda: METHODS.default())
    seed: int = 0
    out: str | None = None
    scenario: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    guard: GuardConfig = field(default_factory=GuardConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    sections: dict[str, Any] = field(default_factory=method_sections)

    def __getattr__(self, name: str) -> Any:
        sections = self.__dict__.get("sections") or {}
        if name in sections:
            return sections[name]
        raise AttributeError(f"{type(self).__name__} has no section {name!r}")

    def to_dict(self) -> dict[str, Any]:
        """Nested plain dict (YAML- and JSON-ready), method sections at the top level, keys as
        the config names them (``ewc.lambda``)."""
        core = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "sections"}
        nested = {**core, **self.sections}
        return {name: _section_dict(value) if dataclasses.is_dataclass(value) else value for name, value in nested.items()}

    def get(self, key: str) -> Any:
        """The value at dotted ``key`` (e.g. ``"train.lr"``, ``"ewc.lambda"``)."""
        value: Any = self
        for name in key.split("."):
            value = getattr(value, _field(value, name))
        return value

    def fit_settings(self, epochs_key: str, lr_key: str, iterations: bool = True) -> FitSettings:
        """Validated :class:`~pearl_cl.learning.training.FitSettings` with the epochs and step size found at
        the dotted keys ``epochs_key`` and ``lr_key`` (e.g. ``"pearl.probe_epochs"``,
        ``"train.lr"``) and the rest of ``train``; ``train.iterations`` applies unless
        ``iterations`` is False (the probe); error messages name those keys.

        Raises:
            ConfigError: a value out of range (names the key).
        """
        from pearl_cl.learning.training import FitSettings

        t = self.train
        return FitSettings(self.get(epochs_key), t.batch_size, self.get(lr_key), t.optimizer, t.weight_decay,
                           t.momentum, names=(epochs_key, lr_key), iterations=t.iterations if iterations else None,
                           augment=t.augment, workers=self.data.workers)


SCENARIOS = ("task-il", "domain-il", "class-il")
"""The three continual-learning scenarios of van de Ven & Tolias (2019): the task label given at
test time (``task-il``); not given, the task-local label to predict (``domain-il``); not given,
the global class to predict (``class-il``)."""

PROTOCOLS: dict[str, dict[str, Any]] = {
    "classic-split-mnist": {
        "backbone.name": "mlp", "backbone.width": 1.0, "train.optimizer": "adam", "train.lr": 0.001,
        "train.batch_size": 128, "train.iterations": 2000, "train.reset_optimizer": False, "scenario": "class-il",
        "lwf.variant": "van-de-ven", "lwf.reduction": "mean", "data.shuffle_classes": True,
        "data.class_order": "van-de-ven", "data.standardise": False,
    },
}
"""Named protocols: config values applied before the file and overrides. ``classic-split-mnist``
is the Split-MNIST protocol of Hsu et al. (2018) and van de Ven & Tolias (2019): an MLP with two
hidden layers of 400 ReLU units, Adam with lr 0.001 and its state kept across tasks, batches of
128, 2,000 iterations per task, LwF as their code has it (``lwf.variant=van-de-ven``, and
``lwf.reduction=mean``, the distillation averaged over units as in that code's earlier form, the
one that reproduces their published LwF figures: README), the
digits dealt to the five tasks in the order their code draws from the seed (``data.shuffle_classes``,
``data.class_order=van-de-ven``: NumPy's legacy generator, natural order for seed 0; their
published runs use seeds 2 to 21), pixels scaled to [0, 1] and not standardised
(``data.standardise``). (Both train on all 60,000 training images; ours hold
``data.val_fraction`` out for validation.)"""

PROTOCOL_SCENARIOS: dict[str, dict[str, dict[str, Any]]] = {
    "classic-split-mnist": {
        "task-il": {"ewc.lambda": 1e7, "online-ewc.lambda": 1e8, "online-ewc.gamma": 0.8, "si.c": 50.0},
        "domain-il": {"ewc.lambda": 1e6, "online-ewc.lambda": 1e8, "online-ewc.gamma": 0.7, "si.c": 500.0},
        "class-il": {"ewc.lambda": 1e8, "online-ewc.lambda": 1e9, "online-ewc.gamma": 0.8, "si.c": 0.5},
    },
}
"""A protocol's hyper-parameters per scenario, applied for the run's ``scenario`` unless the file
or an override sets the key. ``classic-split-mnist``: the values van de Ven & Tolias chose per
scenario on Split-MNIST (``param_values.py`` of github.com/GMvandeVen/continual-learning, 2019)."""


def _key(field_name: str) -> str:
    """The config key of a dataclass field: its name without a trailing ``_`` (``lambda_`` →
    ``lambda``, for names Python reserves)."""
    return field_name[:-1] if field_name.endswith("_") else field_name


def _field(section: Any, key: str) -> str:
    """The field of ``section`` that config key ``key`` names."""
    return key + "_" if not hasattr(section, key) and hasattr(section, key + "_") else key


def _section_dict(section: Any) -> dict[str, Any]:
    return {_key(f.name): getattr(section, f.name) for f in dataclasses.fields(section)}


def _leaf_types(cls: type, prefix: str = "") -> dict[str, Any]:
    """Dotted key → annotated type of every leaf field of dataclass ``cls`` (``sections``
    excluded: see :func:`config_keys`)."""
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name == "sections":
            continue
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            out.update(_leaf_types(kind, f"{prefix}{_key(f.name)}."))
        else:
            out[f"{prefix}{_key(f.name)}"] = kind
    return out


def config_keys() -> dict[str, Any]:
    """Dotted key → annotated type of every config key: the engine's sections and every
    registered method's section."""
    keys = _leaf_types(RunConfig)
    for name, section in section_classes().items():
        keys.update(_leaf_types(section, f"{name}."))
    return keys


def legacy_keys() -> dict[str, str]:
    """Keys of older config files → today's keys, from each method section's ``LEGACY``."""
    return {old: f"{name}.{new}" for name, section in section_classes().items()
            for old, new in getattr(section, "LEGACY", {}).items()}


def _unknown_key(key: str, keys: dict[str, Any]) -> ConfigError:
    section = [k for k in keys if k.startswith(key + ".")]
    if section:
        return ConfigError(f"config key {key!r} is a section, not a value; set one of its keys, e.g. {section[0]}=...")
    close = difflib.get_close_matches(key, list(keys), n=1, cutoff=0.5)
    hint = (f"; did you mean {close[0]!r}?" if close else "") + "; pearl-cl run --help-config lists every key"
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
    keys = config_keys()
    if key not in keys:
        raise _unknown_key(key, keys)
    *parents, leaf = key.split(".")
    target: Any = config
    for name in parents:
        target = getattr(target, _field(target, name))
    setattr(target, _field(target, leaf), _coerce(key, value, keys[key]))


def _flatten(mapping: dict[str, Any], keys: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and dotted not in keys:
            out.update(_flatten(value, keys, dotted + "."))
        else:
            out[dotted] = value
    return out


def updated(config: RunConfig, values: dict[str, Any]) -> RunConfig:
    """A deep copy of ``config`` with the dotted-key ``values`` applied (``{"seed": 3,
    "lora.rank": 4}``); ``config`` is unchanged.

    Raises:
        ConfigError: unknown key or a value of the wrong type.
    """
    new = copy.deepcopy(config)
    for key, value in values.items():
        apply(new, key, value)
    return new


def read_yaml(path: Path, what: str) -> Any:
    """The YAML document in the file at ``path`` (safe loader: plain data only), for ``what``
    (e.g. ``"config file"``) named in errors.

    Raises:
        ConfigError: the file cannot be read, is not UTF-8 text, or is not valid YAML; one line
            naming the file and, for YAML, the line and column.
    """
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path} is not UTF-8 text (byte {exc.start}); give a YAML file") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {path} is not valid YAML: {_yaml_problem(exc)}") from exc
    except RecursionError as exc:
        raise ConfigError(f"{what} {path} nests lists or mappings too deeply to read; give a flat YAML file") from exc


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's error as one line: what is wrong and, when known, the line and column."""
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or getattr(exc, "reason", None) or str(exc).splitlines()[0]
    return f"{problem}{where}"


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
    except RecursionError as exc:
        raise ConfigError(f"malformed --set {text[:40]!r}…: the value nests too deeply; give a flat value, e.g. "
                          f"--set train.epochs=2") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"malformed --set {text!r}: the value is not valid YAML ({_yaml_problem(exc)})") from exc
    return key.strip(), value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, protocol: str | None = None,
                **values: Any) -> RunConfig:
    """The defaults, then the named ``protocol`` (a key of :data:`PROTOCOLS`), then the YAML
    file at ``path``, then ``overrides`` (``"key=value"``), then ``values`` given as keyword
    arguments with ``__`` for dots (``pearl__rank_rule="energy"``), then the protocol's values for
    the resulting ``scenario`` (:data:`PROTOCOL_SCENARIOS`) where none of those set the key.

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
    explicit: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        loaded = read_yaml(path, "config file") or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of keys, got {type(loaded).__name__}")
        legacy = legacy_keys()
        loaded = _renamed_methods(loaded)
        explicit.update({legacy.get(key, key): value for key, value in _flatten(loaded, config_keys()).items()})
    explicit.update(parse_override(text) for text in overrides or [])
    explicit.update({key.replace("__", "."): value for key, value in values.items()})
    for key, value in explicit.items():
        apply(config, key, value)
    by_scenario = PROTOCOL_SCENARIOS.get(protocol or "", {}).get(config.scenario or "", {})
    for key, value in by_scenario.items():
        if key not in explicit:
            apply(config, key, value)
    return config


def _renamed_methods(loaded: dict[str, Any]) -> dict[str, Any]:
    """A config file read as today's methods: where a method section declares
    ``RENAMED_FROM = (old_name, key)`` and the file's section ``old_name`` holds ``key``, that
    section (and ``method: old_name``) is read as the declaring method's; any other file
    unchanged."""
    for name, section in section_classes().items():
        old, key = getattr(section, "RENAMED_FROM", (None, None))
        if isinstance(loaded.get(old), dict) and key in loaded[old]:
            loaded = {(name if k == old else k): v for k, v in loaded.items()}
            if loaded.get("method") == old:
                loaded["method"] = name
    return loaded


def save_config(config: RunConfig) -> str:
    """``config`` as YAML text, in the nested form :func:`load_config` reads back."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


def validate(config: RunConfig) -> None:
    """Reject an invalid config before any data is loaded or any model trained: the one place
    where a whole config is checked (registered choices, every section's ``check``).

    Raises:
        ConfigError: names the key, the bad value and the valid choices.
    """
    from pearl_cl.backbones import check_width
    from pearl_cl.backbones.pretrained import checkpoint_path
    from pearl_cl.data.benchmarks import CLASS_ORDERS, benchmark_spec
    from pearl_cl.learning import distributed

    _check_method(config.method)
    BACKBONES.get(config.backbone.name)
    ROUTERS.get(config.routing.router)
    benchmark_spec(config.benchmark)
    for keys in (("train.reference_epochs", "train.lr"), ("train.epochs", "train.adapter_lr")):
        config.fit_settings(*keys)
    config.guard.check()
    for section in config.sections.values():
        if hasattr(section, "check"):
            section.check(config)
    if config.guard.min_val_accuracy is not None and config.data.val_fraction == 0:
        raise ConfigError("guard.min_val_accuracy needs validation images; set data.val_fraction above 0 (e.g. 0.1)")
    if not 0 <= config.seed < 2**32:
        raise ConfigError(f"seed must be in [0, 2**32), got {config.seed}")
    if config.out is not None and not config.out.strip():
        raise ConfigError("out is empty; give a run directory with --out DIR, or leave it unset for runs/<name>")
    check_width(config.backbone.width)
    distributed.check_batch_size(config.train.batch_size)
    if config.backbone.pretrained is not None:
        checkpoint_path(config.backbone.pretrained, config.backbone.name)
    if not 0.0 <= config.routing.shrinkage <= 1.0:
        raise ConfigError(f"routing.shrinkage must be in [0, 1], got {config.routing.shrinkage}")
    if config.routing.sample is not None and config.routing.sample < 2:
        raise ConfigError(f"routing.sample must be at least 2 images per task or null (all), got {config.routing.sample}")
    if config.scenario is not None and config.scenario not in SCENARIOS:
        raise ConfigError(f"unknown scenario {config.scenario!r}; choose one of: {', '.join(SCENARIOS)}, "
                          f"or null (the benchmark's own)")
    if config.routing.random_features < 1:
        raise ConfigError(f"routing.random_features must be a positive width, got {config.routing.random_features}")
    if config.data.class_order not in CLASS_ORDERS:
        raise ConfigError(f"data.class_order must be one of {', '.join(CLASS_ORDERS)}, got {config.data.class_order!r}")
    if config.data.workers < 0:
        raise ConfigError(f"data.workers must be >= 0 (0: decode images in the training process), got {config.data.workers}")
    from pearl_cl import device

    device.check_precision(config.train.precision, device.resolve(config.train.device))
    if config.logging.tensorboard:
        from pearl_cl.engine.loggers import check_tensorboard

        check_tensorboard()


def _check_method(label: str) -> None:
    """Raise :class:`ConfigError` unless ``label`` is a registered method; a ``compare`` label
    (a method's variant, e.g. a fixed rank) gets the method and values it stands for."""
    try:
        METHODS.get(label)
    except ConfigError as exc:
        for name, cls in METHODS.items():
            values = cls.variant(label)
            if values:
                sets = " ".join(f"--set {key}={value}" for key, value in values.items())
                raise ConfigError(f"{exc}; {label!r} is a compare label: run --method {name} {sets}") from exc
        raise


def describe_keys() -> str:
    """Every config key with its default and type, section by section under the section's
    description (what ``pearl-cl run --help-config`` prints)."""
    config = RunConfig()
    defaults = config.to_dict()
    lines: list[str] = []
    current = None
    for key, kind in config_keys().items():
        section, _, leaf = key.rpartition(".")
        if section != current or not lines:
            current = section
            doc = " ".join((type(getattr(config, section)).__doc__ or "").split()) if section else "The run."
            lines += ["", f"[{section or 'run'}]", *textwrap.wrap(doc, 100, initial_indent="  ", subsequent_indent="  ")]
        value = defaults[section][leaf] if section else defaults[key]
        name = kind.__name__ if isinstance(kind, type) else str(kind)
        lines.append(f"    {key} = {value!r}  ({name})")
    return "\n".join(lines).strip() + "\n"
