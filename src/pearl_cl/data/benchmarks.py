"""Benchmarks: a dataset cut into a sequence of tasks (our design, after the literature's protocols).

* Split-MNIST (Zenke et al., "Continual Learning Through Synaptic Intelligence", ICML 2017)
  cuts the 10 digit classes into 5 tasks of 2 classes, in the order (0,1), (2,3), …, (8,9);
  Split-Fashion-MNIST does the same for Fashion-MNIST. ``shuffle_classes`` permutes the class
  order with the run's seed. Scenario without task labels: class-incremental.
* Permuted-MNIST (Goodfellow et al., "An Empirical Investigation of Catastrophic Forgetting",
  2013; 10 tasks as in van de Ven & Tolias, "Three scenarios for continual learning", 2019):
  every task holds all 10 digits, its pixels shuffled by a fixed permutation drawn from the
  seed; task 1 keeps the original pixel order (our choice, so the reference task is natural
  images). Rotated-MNIST: 5 tasks of all 10 digits rotated by 0°, 45°, 90°, 135°, 180°.
  Scenario without task labels: domain-incremental (one shared label set).
* Split-CIFAR-10 (5 tasks of 2 classes) and Split-CIFAR-100 (10 tasks of 10 classes, or 5 of
  20), as in the class-incremental CIFAR protocols of the literature (Rebuffi et al., iCaRL,
  CVPR 2017; van de Ven et al., 2022), classes in label order; the files come from
  ``--data-root`` (:mod:`pearl_cl.data.cifar`). Split-TinyImageNet: 10 tasks of 20 classes
  (mammoth's seq-tinyimg), 64×64 images, the labelled validation set as test set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from pearl_cl.data.sources import DATASETS, ImageSet
from pearl_cl.errors import ConfigError


@dataclass(frozen=True)
class BenchmarkSpec:
    """How a benchmark cuts a dataset: ``n_tasks`` tasks of ``classes_per_task`` classes.

    ``mean`` and ``std`` (per channel, on pixels scaled to [0, 1]) normalise the images.
    ``scenario`` is how the benchmark is evaluated without task labels: ``class-il`` (disjoint
    classes) or ``domain-il`` (one shared label set). ``shift`` is what tells domain-IL tasks
    apart: ``permute`` or ``rotate`` (``none`` for class splits). ``task_classes``, when given
    (a user-defined benchmark), lists each task's classes and replaces the even split.
    """

    name: str
    dataset: str
    n_tasks: int
    classes_per_task: int
    scenario: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    shift: str = "none"
    task_classes: tuple[tuple[int, ...], ...] = ()


# per dataset: number of classes, and mean and std of its training pixels scaled to [0, 1]
DATASET_FACTS: dict[str, tuple[int, tuple[float, ...], tuple[float, ...]]] = {
    "mnist": (10, (0.1307,), (0.3081,)),
    "fashion-mnist": (10, (0.2860,), (0.3530,)),
    # CIFAR: the training-set statistics the CL libraries use (mammoth's seq-cifar10 / seq-cifar100)
    "cifar10": (10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": (100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "tinyimagenet": (200, (0.4802, 0.4480, 0.3975), (0.2770, 0.2691, 0.2821)),  # mammoth's seq-tinyimg
}
_MNIST, _FASHION = DATASET_FACTS["mnist"][1:], DATASET_FACTS["fashion-mnist"][1:]
BENCHMARKS: dict[str, BenchmarkSpec] = {
    "split-mnist": BenchmarkSpec("split-mnist", "mnist", 5, 2, "class-il", *_MNIST),
    "split-fashion-mnist": BenchmarkSpec("split-fashion-mnist", "fashion-mnist", 5, 2, "class-il", *_FASHION),
    "permuted-mnist": BenchmarkSpec("permuted-mnist", "mnist", 10, 10, "domain-il", *_MNIST, "permute"),
    "rotated-mnist": BenchmarkSpec("rotated-mnist", "mnist", 5, 10, "domain-il", *_MNIST, "rotate"),
    "split-cifar10": BenchmarkSpec("split-cifar10", "cifar10", 5, 2, "class-il", *DATASET_FACTS["cifar10"][1:]),
    "split-cifar100-10x10": BenchmarkSpec("split-cifar100-10x10", "cifar100", 10, 10, "class-il", *DATASET_FACTS["cifar100"][1:]),
    "split-cifar100-5x20": BenchmarkSpec("split-cifar100-5x20", "cifar100", 5, 20, "class-il", *DATASET_FACTS["cifar100"][1:]),
    "split-tinyimagenet": BenchmarkSpec("split-tinyimagenet", "tinyimagenet", 10, 20, "class-il",
                                        *DATASET_FACTS["tinyimagenet"][1:]),
}
BENCHMARK_FILE_SUFFIXES = (".yaml", ".yml")


def benchmark_spec(name: str) -> BenchmarkSpec:
    """The spec of a built-in benchmark, or of a user-defined one in a YAML file::

        dataset: mnist            # a dataset of pearl_cl.data.sources.DATASETS
        tasks: [[0, 1, 2], [3, 4], [5, 6, 7, 8, 9]]   # each task's classes, disjoint (class-IL)

    Raises:
        ConfigError: unknown name, unreadable file, unknown dataset, a task with no classes, a
            class outside the dataset's labels, or a class in two tasks (names the file and the fix).
    """
    if not name.endswith(BENCHMARK_FILE_SUFFIXES):
        if name not in BENCHMARKS:
            raise ConfigError(f"unknown benchmark {name!r}; choose one of: {', '.join(sorted(BENCHMARKS))}, "
                              f"or give a YAML file of tasks")
        return BENCHMARKS[name]
    import yaml

    try:
        data = yaml.safe_load(Path(name).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read benchmark file {name}: {exc}") from exc
    if not isinstance(data, dict) or set(data) != {"dataset", "tasks"}:
        raise ConfigError(f"benchmark file {name} must hold exactly the keys dataset and tasks, e.g. "
                          f"dataset: mnist / tasks: [[0, 1], [2, 3]]")
    dataset, tasks = data["dataset"], data["tasks"]
    if not isinstance(dataset, str) or dataset not in DATASET_FACTS:
        raise ConfigError(f"benchmark file {name}: unknown dataset {dataset!r}; choose one of: {', '.join(DATASET_FACTS)}")
    n_classes, mean, std = DATASET_FACTS[dataset]
    if not isinstance(tasks, list) or not tasks:
        raise ConfigError(f"benchmark file {name}: tasks must be a non-empty list of class lists, e.g. [[0, 1], [2, 3]]")
    owner: dict[int, int] = {}
    for t, classes in enumerate(tasks, start=1):
        if not isinstance(classes, list):
            raise ConfigError(f"benchmark file {name}: task {t} is {classes!r}, not a list of classes; write tasks as "
                              f"a list of lists, e.g. [[0, 1], [2, 3]]")
        if not classes:
            raise ConfigError(f"benchmark file {name}: task {t} lists no classes; give every task at least one class")
        for c in classes:
            if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < n_classes:
                raise ConfigError(f"benchmark file {name}: class {c!r} of task {t} is not a label of {dataset} "
                                  f"(0 to {n_classes - 1})")
            if c in owner:
                raise ConfigError(f"benchmark file {name}: class {c} is in task {owner[c]} and task {t}; "
                                  f"class-incremental tasks need disjoint classes")
            owner[c] = t
    return BenchmarkSpec(Path(name).stem, dataset, len(tasks), 0, "class-il", mean, std,
                         task_classes=tuple(tuple(c) for c in tasks))
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
    """One task's data, already normalised.

    Attributes:
        index: 0-based position in the sequence (task ``index + 1`` in the docs and tables).
        classes: the task's global class ids; local label ``k`` means ``classes[k]``.
        train_x, val_x, test_x: ``(N, C, H, W)`` float32 images.
        train_y, val_y, test_y: ``(N,)`` int64 local labels in ``[0, len(classes))``.
    """

    index: int
    classes: tuple[int, ...]
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
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
    """A task sequence with the facts a run records about its data."""

    spec: BenchmarkSpec
    tasks: tuple[TaskData, ...]
    image_shape: tuple[int, int, int]
    source: str

    @property
    def n_classes(self) -> int:
        """Number of head units a single head needs: the largest global class id + 1."""
        return max(max(t.classes) for t in self.tasks) + 1


def normalise(images: torch.Tensor, spec: BenchmarkSpec) -> torch.Tensor:
    """``(N, C, H, W)`` pixels in [0, 255] (any dtype) → float32 standardised with ``spec``'s mean and std."""
    mean = torch.tensor(spec.mean).view(1, -1, 1, 1)
    std = torch.tensor(spec.std).view(1, -1, 1, 1)
    return (images.float() / 255.0 - mean) / std


def _take(n: int, limit: int | None, generator: torch.Generator) -> torch.Tensor:
    """A seeded random order of ``range(n)``, cut to ``limit`` items when given."""
    order = torch.randperm(n, generator=generator)
    return order if limit is None else order[:limit]


def split_tasks(
    images: ImageSet,
    spec: BenchmarkSpec,
    seed: int,
    val_fraction: float = 0.1,
    shuffle_classes: bool = False,
    train_per_task: int | None = None,
    test_per_task: int | None = None,
) -> tuple[TaskData, ...]:
    """Cut ``images`` into ``spec.n_tasks`` tasks: ``spec.classes_per_task`` disjoint classes
    each (class split), or every class under a per-task :func:`shift_images` (domain shift).

    ``val_fraction`` of each task's (possibly capped) training images become its validation
    split, chosen with ``seed``. ``train_per_task`` / ``test_per_task`` cap the images per task
    (a seeded random subset) for quick runs; None keeps all.

    Raises:
        ConfigError: ``val_fraction`` outside [0, 1), or a cap below 1.
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
    order = torch.randperm(n_classes, generator=generator) if shuffle_classes and not domain else torch.arange(n_classes)
    tasks = []
    for t in range(spec.n_tasks):
        first = 0 if domain else t * spec.classes_per_task
        classes = spec.task_classes[t] if spec.task_classes else tuple(int(c) for c in order[first : first + spec.classes_per_task])
        lookup = torch.full((int(images.train_labels.max()) + 1,), -1, dtype=torch.long)
        lookup[list(classes)] = torch.arange(len(classes))

        def select(x: torch.Tensor, y: torch.Tensor, cap: int | None) -> tuple[torch.Tensor, torch.Tensor]:
            idx = torch.nonzero(lookup[y] >= 0).squeeze(1)
            idx = idx[_take(len(idx), cap, generator)].sort().values
            return normalise(shift_images(x[idx], spec, t, seed), spec), lookup[y[idx]]

        train_x, train_y = select(images.train_images, images.train_labels, train_per_task)
        n_val = int(round(val_fraction * len(train_y)))
        perm = _take(len(train_y), None, generator)
        val_idx, fit_idx = perm[:n_val].sort().values, perm[n_val:].sort().values
        test_x, test_y = select(images.test_images, images.test_labels, test_per_task)
        tasks.append(
            TaskData(t, classes, train_x[fit_idx], train_y[fit_idx], train_x[val_idx], train_y[val_idx], test_x, test_y)
        )
    return tuple(tasks)


def make_benchmark(
    name: str,
    seed: int,
    data_root: str | Path | None = None,
    download: bool = False,
    val_fraction: float = 0.1,
    shuffle_classes: bool = False,
    train_per_task: int | None = None,
    test_per_task: int | None = None,
) -> Benchmark:
    """Load benchmark ``name`` (a key of :data:`BENCHMARKS`) and cut it into tasks.

    Raises:
        ConfigError: unknown benchmark name.
        DataError: the dataset cannot be found (see :mod:`pearl_cl.data.sources`).
    """
    spec = benchmark_spec(name)
    images = DATASETS[spec.dataset](data_root=data_root, download=download)
    tasks = split_tasks(images, spec, seed, val_fraction, shuffle_classes, train_per_task, test_per_task)
    return Benchmark(spec=spec, tasks=tasks, image_shape=images.image_shape, source=images.source)
