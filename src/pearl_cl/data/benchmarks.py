"""Benchmarks: a dataset cut into a sequence of tasks (our design).

The built-in benchmarks and the protocols they follow are in :mod:`pearl_cl.data.specs`;
user-defined ones come from a YAML file (:mod:`pearl_cl.data.benchmark_file`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pearl_cl.data.benchmark_file import read_benchmark_file
from pearl_cl.data.files import ImageFiles
from pearl_cl.data.folder import read_image_folder
from pearl_cl.data.pixels import NormalisedImages, standardise
from pearl_cl.data.sources import DATASETS, ImageSet
from pearl_cl.data.specs import BENCHMARK_FILE_SUFFIXES, IMAGE_FOLDER, BenchmarkSpec
from pearl_cl.errors import ConfigError
from pearl_cl.registry import BENCHMARKS


def benchmark_spec(name: str) -> BenchmarkSpec:
    """The spec of built-in benchmark ``name``, or of the benchmark file at path ``name``
    (``.yaml``/``.yml``, :func:`~pearl_cl.data.benchmark_file.read_benchmark_file`).

    Raises:
        ConfigError: unknown name, or a benchmark file that is unreadable or invalid.
    """
    if name.endswith(BENCHMARK_FILE_SUFFIXES):
        return read_benchmark_file(Path(name))
    if name not in BENCHMARKS:
        raise ConfigError(f"unknown benchmark {name!r}; choose one of: {', '.join(BENCHMARKS.names())}, "
                          f"or give a YAML file of tasks")
    return BENCHMARKS.get(name)


ROTATION_STEP = 45.0  # degrees between rotated-mnist tasks


def shift_images(images: torch.Tensor, spec: BenchmarkSpec, task: int, seed: int) -> torch.Tensor:
    """Task ``task``'s view of ``(N, C, H, W)`` uint8 images under ``spec.shift``.

    ``permute``: one pixel permutation per task from ``seed`` (task 0: identity); ``rotate``:
    ``task · ROTATION_STEP`` degrees counter-clockwise (torchvision); ``none``: unchanged.
    """
    if spec.shift == "permute" and task > 0:
        n, c, h, w = images.shape
        perm = torch.randperm(h * w, generator=torch.Generator().manual_seed(seed * 7919 + task))
        return images.reshape(n, c, h * w)[:, :, perm].reshape(n, c, h, w)
    if spec.shift == "rotate" and task > 0:
        from torchvision.transforms.functional import rotate

        return rotate(images, task * ROTATION_STEP)
    return images


@dataclass(frozen=True)
class TaskData:
    """One task's data.

    Attributes:
        index: 0-based position in the sequence (task ``index + 1`` in the docs and tables).
        classes: the task's global class ids; local label ``k`` means ``classes[k]``.
        train_x, val_x, test_x: ``(N, C, H, W)`` images kept as uint8
            (:class:`~pearl_cl.data.pixels.NormalisedImages`): ``x[rows]`` is the float32
            normalised batch, ``x[:]`` all of them.
        train_y, val_y, test_y: ``(N,)`` int64 local labels in ``[0, len(classes))``.
    """

    index: int
    classes: tuple[int, ...]
    train_x: NormalisedImages
    train_y: torch.Tensor
    val_x: NormalisedImages
    val_y: torch.Tensor
    test_x: NormalisedImages
    test_y: torch.Tensor

    @property
    def name(self) -> str:
        """``"task1"``, ``"task2"``, … (also the task's adapter name)."""
        return f"task{self.index + 1}"

    @property
    def test_labels(self) -> torch.Tensor:
        """``(N_test,)`` global class ids of the test images."""
        return torch.tensor(self.classes)[self.test_y]


@dataclass(frozen=True)
class Benchmark:
    """A task sequence with the facts a run records about its data (:func:`describe`).
    ``class_names`` names each class id when the dataset does (else empty); ``loaded`` is False
    for a benchmark rebuilt from a run directory's record (:func:`described_benchmark`), whose
    tasks hold no images."""

    spec: BenchmarkSpec
    tasks: tuple[TaskData, ...]
    image_shape: tuple[int, int, int]
    source: str
    class_names: tuple[str, ...] = ()
    loaded: bool = True

    @property
    def n_classes(self) -> int:
        """Number of head units a single head needs: the largest global class id + 1."""
        return max(max(t.classes) for t in self.tasks) + 1


def scenario_view(bench: Benchmark, scenario: str | None) -> Benchmark:
    """``bench`` as a run in ``scenario`` sees it (van de Ven & Tolias 2019): ``domain-il`` on a
    class-incremental benchmark gives every task the task-local labels as its classes (task k's
    classes become ``(0, …, K_k − 1)``, shared by all tasks: Split-MNIST's odd-or-even); any
    other scenario, or None, leaves it as it is.

    Raises:
        ConfigError: ``class-il`` on a benchmark whose tasks share their classes (there is no
            class of a task to tell apart).
    """
    if scenario == "class-il" and bench.spec.scenario == "domain-il":
        raise ConfigError(f"scenario=class-il needs tasks with classes of their own; {bench.spec.name}'s tasks "
                          f"share their classes: use scenario=domain-il or task-il")
    if scenario != "domain-il" or bench.spec.scenario == "domain-il":
        return bench
    tasks = tuple(dataclasses.replace(t, classes=tuple(range(len(t.classes)))) for t in bench.tasks)
    return dataclasses.replace(bench, spec=dataclasses.replace(bench.spec, scenario="domain-il"), tasks=tasks)


def pixel_statistics(images: torch.Tensor, labels: torch.Tensor, task_classes: tuple[tuple[int, ...], ...]) -> dict:
    """``{"mean": ..., "std": ...}`` per channel of the ``(N, C, H, W)`` uint8 ``images`` whose
    label is in a task, on pixels scaled to [0, 1] (how an image-folder benchmark is normalised)."""
    keep = torch.nonzero(torch.isin(labels, torch.tensor([c for classes in task_classes for c in classes]))).squeeze(1)
    channels = images.shape[1]
    sums, squares = torch.zeros(channels, dtype=torch.float64), torch.zeros(channels, dtype=torch.float64)
    for start in range(0, len(keep), 1024):  # in chunks: float64 copies of every pixel would take 8x the data
        pixels = images[keep[start : start + 1024]].transpose(0, 1).reshape(channels, -1).double() / 255.0
        sums += pixels.sum(dim=1)
        squares += (pixels**2).sum(dim=1)
    count = len(keep) * images.shape[2] * images.shape[3]
    mean = sums / count
    std = (squares / count - mean**2).clamp_min(0).sqrt().clamp_min(1e-3)  # a constant channel must not divide by 0
    return {"mean": tuple(round(v, 4) for v in mean.tolist()), "std": tuple(round(v, 4) for v in std.tolist())}


def normalise(images: torch.Tensor, spec: BenchmarkSpec) -> torch.Tensor:
    """``(N, C, H, W)`` pixels in [0, 255] (any dtype) → float32 standardised with ``spec``'s mean and std."""
    return standardise(images, spec.mean, spec.std)


def _take(n: int, limit: int | None, generator: torch.Generator) -> torch.Tensor:
    """A seeded random order of ``range(n)``, cut to ``limit`` items when given."""
    order = torch.randperm(n, generator=generator)
    return order if limit is None else order[:limit]


CLASS_ORDERS = ("seeded", "van-de-ven")
"""How ``shuffle_classes`` draws the class order (:func:`class_order`)."""


def class_order(n_classes: int, seed: int, rule: str, generator: torch.Generator) -> list[int]:
    """The classes ``0 … n_classes − 1`` in the order they are dealt to the tasks.

    ``seeded``: ``torch.randperm`` from ``generator`` (the split's generator, seeded with
    ``seed``; our design). ``van-de-ven``: the order the code of van de Ven & Tolias (2019,
    github.com/GMvandeVen/continual-learning, ``data.py``) deals the digits in: NumPy's legacy
    generator seeded with ``seed`` draws a permutation ``p`` that relabels class ``y`` as ``p[y]``,
    and task ``t`` takes the relabelled classes ``2t, 2t + 1`` (so the order is ``p``'s inverse);
    seed 0 keeps the natural order, as their ``exception`` does.

    Raises:
        ConfigError: an unknown ``rule``.
    """
    if rule == "seeded":
        return torch.randperm(n_classes, generator=generator).tolist()
    if rule == "van-de-ven":
        if seed == 0:
            return list(range(n_classes))
        return np.argsort(np.random.RandomState(seed).permutation(n_classes)).tolist()
    raise ConfigError(f"data.class_order must be one of {', '.join(CLASS_ORDERS)}, got {rule!r}")


def split_tasks(
    images: ImageSet,
    spec: BenchmarkSpec,
    seed: int,
    val_fraction: float = 0.1,
    shuffle_classes: bool = False,
    train_per_task: int | None = None,
    test_per_task: int | None = None,
    first_task_classes: int | None = None,
    classes_per_task: int | None = None,
    order_rule: str = "seeded",
) -> tuple[TaskData, ...]:
    """Cut ``images`` into ``spec.n_tasks`` tasks: ``spec.classes_per_task`` disjoint classes
    each (class split), or every class under a per-task :func:`shift_images` (domain shift).
    ``first_task_classes`` and ``classes_per_task`` re-cut a class split's classes (in their
    seeded order): the first task takes ``first_task_classes`` (default: ``classes_per_task``),
    every later task ``classes_per_task`` (default: the spec's), the last what is left.
    ``shuffle_classes`` deals the classes in the order :func:`class_order` draws by ``order_rule``.

    ``val_fraction`` of each task's (possibly capped) training images become its validation
    split, chosen with ``seed``. ``train_per_task`` / ``test_per_task`` cap the images per task
    (a seeded random subset) for quick runs; None keeps all.

    Raises:
        ConfigError: ``val_fraction`` outside [0, 1), a cap below 1, or a re-cut of a domain-IL
            or user-defined benchmark, or one that leaves fewer than two tasks.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction must be in [0, 1), got {val_fraction}; try data.val_fraction=0.1")
    for key, cap in (("data.train_per_task", train_per_task), ("data.test_per_task", test_per_task)):
        if cap is not None and cap < 1:
            raise ConfigError(f"{key} must be >= 1 or null (all images), got {cap}")
    generator = torch.Generator().manual_seed(seed)
    n_classes = spec.n_tasks * spec.classes_per_task
    domain = spec.shift != "none"
    if domain:
        n_classes = spec.classes_per_task
    order = class_order(n_classes, seed, order_rule, generator) if shuffle_classes and not domain else list(range(n_classes))
    groups = recut(spec, order, first_task_classes, classes_per_task)
    tasks = []
    for t, classes in enumerate(groups):
        lookup = torch.full((int(images.train_labels.max()) + 1,), -1, dtype=torch.long)
        lookup[list(classes)] = torch.arange(len(classes))

        def select(x: torch.Tensor, y: torch.Tensor, cap: int | None) -> tuple[NormalisedImages, torch.Tensor]:
            idx = torch.nonzero(lookup[y] >= 0).squeeze(1)
            idx = idx[_take(len(idx), cap, generator)].sort().values
            if isinstance(x, ImageFiles) and spec.shift == "none":  # the files stay unread
                return NormalisedImages(x.take(idx), spec.mean, spec.std), lookup[y[idx]]
            return NormalisedImages(shift_images(x[idx], spec, t, seed), spec.mean, spec.std), lookup[y[idx]]

        train_x, train_y = select(images.train_images, images.train_labels, train_per_task)
        n_val = int(round(val_fraction * len(train_y)))
        perm = _take(len(train_y), None, generator)
        val_idx, fit_idx = perm[:n_val].sort().values, perm[n_val:].sort().values
        test_x, test_y = select(images.test_images, images.test_labels, test_per_task)
        tasks.append(
            TaskData(t, classes, train_x.take(fit_idx), train_y[fit_idx], train_x.take(val_idx), train_y[val_idx],
                     test_x, test_y)
        )
    return tuple(tasks)


def recut(spec: BenchmarkSpec, order: list[int], first_task_classes: int | None,
          classes_per_task: int | None) -> list[tuple[int, ...]]:
    """Each task's classes: the spec's own tasks, or ``order`` re-cut (see :func:`split_tasks`).

    Raises:
        ConfigError: a re-cut of a domain-IL or user-defined benchmark, a size below 1, or fewer
            than two tasks.
    """
    if first_task_classes is None and classes_per_task is None:
        if spec.task_classes:
            return list(spec.task_classes)
        if spec.shift != "none":
            return [tuple(order)] * spec.n_tasks
        size = spec.classes_per_task
        return [tuple(order[t * size : (t + 1) * size]) for t in range(spec.n_tasks)]
    if spec.shift != "none" or spec.task_classes:
        raise ConfigError(f"data.first_task_classes and data.classes_per_task re-cut a class split; {spec.name} "
                          f"{'is domain-incremental' if spec.shift != 'none' else 'lists its own tasks'}: leave them null")
    later = classes_per_task or spec.classes_per_task
    first = first_task_classes or later
    for key, value in (("data.first_task_classes", first), ("data.classes_per_task", later)):
        if value < 1:
            raise ConfigError(f"{key} must be >= 1 or null, got {value}")
    if first >= len(order):
        raise ConfigError(f"data.first_task_classes={first} leaves no class for a second task ({spec.name} has "
                          f"{len(order)} classes); choose fewer")
    return [tuple(order[:first])] + [tuple(order[s : s + later]) for s in range(first, len(order), later)]


def make_benchmark(
    name: str,
    seed: int,
    data_root: str | Path | None = None,
    download: bool = False,
    val_fraction: float = 0.1,
    shuffle_classes: bool = False,
    train_per_task: int | None = None,
    test_per_task: int | None = None,
    first_task_classes: int | None = None,
    classes_per_task: int | None = None,
    standardise: bool = True,
    order_rule: str = "seeded",
) -> Benchmark:
    """Load benchmark ``name`` (a registered name or a benchmark file) and cut it into tasks
    (:func:`split_tasks`). Without ``standardise`` the spec's mean and std become 0 and 1 (pixels
    only scaled to [0, 1]).

    Raises:
        ConfigError: unknown benchmark name, or bad split settings.
        DataError: the dataset cannot be found (see :mod:`pearl_cl.data.sources`).
    """
    spec = benchmark_spec(name)
    if spec.dataset == IMAGE_FOLDER:
        images = read_image_folder(Path(spec.folder), spec.image_size)
        spec = dataclasses.replace(spec, **pixel_statistics(images.train_images, images.train_labels, spec.task_classes))
    else:
        images = DATASETS[spec.dataset](data_root=data_root, download=download)
    if not standardise:
        spec = dataclasses.replace(spec, mean=(0.0,) * len(spec.mean), std=(1.0,) * len(spec.std))
    tasks = split_tasks(images, spec, seed, val_fraction, shuffle_classes, train_per_task, test_per_task,
                        first_task_classes, classes_per_task, order_rule)
    return Benchmark(spec=spec, tasks=tasks, image_shape=images.image_shape, source=images.source,
                     class_names=images.class_names)


def describe(bench: Benchmark) -> dict:
    """What a run directory keeps of ``bench`` so that predict and export need no dataset: its
    spec (normalisation, scenario, …), image shape, source, class names, and each task's
    classes; JSON-ready (:func:`described_benchmark` reads it back)."""
    return {"spec": dataclasses.asdict(bench.spec), "image_shape": list(bench.image_shape), "source": bench.source,
            "class_names": list(bench.class_names),
            "tasks": [{"classes": list(t.classes)} for t in bench.tasks]}


def _tuples(value):
    """``value`` with every list turned into a tuple, nested (JSON back to a spec's fields)."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def described_benchmark(description: dict) -> Benchmark:
    """The benchmark :func:`describe` recorded, without images (``loaded`` False): each task has
    its index and classes, and empty image and label tensors.

    Raises:
        ValueError: ``description`` is not what :func:`describe` writes.
    """
    try:
        spec = BenchmarkSpec(**{k: _tuples(v) for k, v in description["spec"].items()})
        c, h, w = (int(v) for v in description["image_shape"])
        none = NormalisedImages(torch.empty((0, c, h, w), dtype=torch.uint8), spec.mean, spec.std)
        labels = torch.empty(0, dtype=torch.long)
        tasks = tuple(TaskData(k, tuple(int(v) for v in t["classes"]), none, labels, none, labels, none, labels)
                      for k, t in enumerate(description["tasks"]))
        return Benchmark(spec, tasks, (c, h, w), str(description["source"]), tuple(description["class_names"]), loaded=False)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a benchmark description ({exc!r})") from exc
