"""User-defined benchmarks in a YAML file (our design). Two forms::

    dataset: mnist                  # a dataset of pearl_cl.data.sources.DATASETS
    tasks: [[0, 1, 2], [3, 4]]      # each task's class ids

    image_folder: flowers           # ROOT holding train/<class>/ and test/<class>/ (pearl_cl.data.folder);
                                    # a relative path is relative to the YAML file's folder
    tasks: [[daisy, rose], [tulip]] # each task's class folder names, or instead:
    classes_per_task: 2             # the sorted class names, cut in order
    image_size: [64, 64]            # optional: resize every image to H×W pixels

Tasks hold disjoint classes (class-incremental). Every mistake is a
:class:`~pearl_cl.errors.ConfigError` naming the file and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pearl_cl.data.folder import folder_classes
from pearl_cl.data.specs import DATASET_FACTS, IMAGE_FOLDER, BenchmarkSpec
from pearl_cl.config import read_yaml
from pearl_cl.errors import ConfigError, DataError

DATASET_KEYS = {"dataset", "tasks"}
FOLDER_KEYS = {"image_folder", "tasks", "classes_per_task", "image_size"}
EXAMPLES = "dataset: mnist / tasks: [[0, 1], [2, 3]], or image_folder: DIR / classes_per_task: 2"


def _load(path: Path) -> dict[str, Any]:
    data = read_yaml(path, "benchmark file")
    if not isinstance(data, dict):
        raise ConfigError(f"benchmark file {path} must hold a mapping, e.g. {EXAMPLES}")
    return data


def _task_ids(path: Path, tasks: Any, labels: dict[Any, int], what: str) -> tuple[tuple[int, ...], ...]:
    """Each task's class ids, from ``tasks`` (a list of lists of keys of ``labels``).

    Raises:
        ConfigError: not a non-empty list of non-empty lists, an unknown class, or a class in two tasks.
    """
    if not isinstance(tasks, list) or not tasks:
        raise ConfigError(f"benchmark file {path}: tasks must be a non-empty list of class lists, e.g. [[0, 1], [2, 3]]")
    owner: dict[int, int] = {}
    for t, classes in enumerate(tasks, start=1):
        if not isinstance(classes, list):
            raise ConfigError(f"benchmark file {path}: task {t} is {classes!r}, not a list of classes; write tasks as "
                              f"a list of lists, e.g. [[0, 1], [2, 3]]")
        if not classes:
            raise ConfigError(f"benchmark file {path}: task {t} lists no classes; give every task at least one class")
        for c in classes:
            if isinstance(c, bool) or not isinstance(c, (int, str)) or c not in labels:
                raise ConfigError(f"benchmark file {path}: class {c!r} of task {t} is not {what}")
            if labels[c] in owner:
                raise ConfigError(f"benchmark file {path}: class {c} is in task {owner[labels[c]]} and task {t}; "
                                  f"class-incremental tasks need disjoint classes")
            owner[labels[c]] = t
    return tuple(tuple(labels[c] for c in classes) for classes in tasks)


def _dataset_spec(path: Path, data: dict[str, Any]) -> BenchmarkSpec:
    dataset = data["dataset"]
    if not isinstance(dataset, str) or dataset not in DATASET_FACTS:
        raise ConfigError(f"benchmark file {path}: unknown dataset {dataset!r}; choose one of: {', '.join(DATASET_FACTS)}")
    n_classes, mean, std = DATASET_FACTS[dataset]
    tasks = _task_ids(path, data["tasks"], {c: c for c in range(n_classes)}, f"a label of {dataset} (0 to {n_classes - 1})")
    return BenchmarkSpec(path.stem, dataset, len(tasks), 0, "class-il", mean, std, task_classes=tasks)


def image_folder_root(path: Path, data: dict[str, Any]) -> Path:
    """The absolute image tree of a benchmark file's ``image_folder`` (relative to the file's folder)."""
    root = Path(str(data["image_folder"])).expanduser()
    return (root if root.is_absolute() else path.parent / root).resolve()


def _image_size(path: Path, size: Any) -> tuple[int, int] | None:
    if size is None:
        return None
    ok = isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                                                           for v in size)
    if not ok:
        raise ConfigError(f"benchmark file {path}: image_size must be [height, width] in pixels, e.g. [64, 64], got {size!r}")
    return size[0], size[1]


def _folder_spec(path: Path, data: dict[str, Any]) -> BenchmarkSpec:
    root = image_folder_root(path, data)
    try:
        names = folder_classes(root)
    except DataError as exc:
        raise ConfigError(f"benchmark file {path}: {exc}") from exc
    if ("tasks" in data) == ("classes_per_task" in data):
        raise ConfigError(f"benchmark file {path}: give either tasks (lists of class folder names) or classes_per_task, "
                          f"not {'both' if 'tasks' in data else 'neither'}; the classes are {', '.join(names)}")
    tasks = data.get("tasks")
    if "classes_per_task" in data:
        k = data["classes_per_task"]
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(names) or len(names) % k:
            raise ConfigError(f"benchmark file {path}: classes_per_task must divide the {len(names)} classes, got {k!r}; "
                              f"choose a divisor, or list the tasks (tasks: [[a, b], [c]]) to use some classes or "
                              f"tasks of different sizes")
        tasks = [names[i : i + k] for i in range(0, len(names), k)]
    if isinstance(tasks, list):  # folders named 0, 1, … are read by YAML as numbers
        tasks = [[str(c) if isinstance(c, int) and not isinstance(c, bool) else c for c in t] if isinstance(t, list) else t
                 for t in tasks]
    labels = {name: k for k, name in enumerate(names)}
    task_classes = _task_ids(path, tasks, labels, f"a class folder of {root / 'train'} ({', '.join(names)})")
    # mean and std stay empty here: pearl_cl.data.benchmarks measures them when the images load
    return BenchmarkSpec(path.stem, IMAGE_FOLDER, len(task_classes), 0, "class-il", (), (), task_classes=task_classes, folder=str(root), image_size=_image_size(path, data.get("image_size")))


def read_benchmark_file(path: Path) -> BenchmarkSpec:
    """The :class:`BenchmarkSpec` of the benchmark file at ``path`` (module docstring).

    Raises:
        ConfigError: an unreadable file, unknown or missing keys, an unknown dataset or class,
            an empty task, a class in two tasks, a bad ``image_size``, or an image folder
            without ``train/`` and ``test/`` class folders.
    """
    data = _load(path)
    keys = set(data)
    if keys == DATASET_KEYS:
        return _dataset_spec(path, data)
    if "image_folder" in keys and keys <= FOLDER_KEYS:
        return _folder_spec(path, data)
    raise ConfigError(f"benchmark file {path} has keys {', '.join(sorted(map(str, keys)))}; it needs exactly dataset and "
                      f"tasks, or image_folder with tasks or classes_per_task (and optionally image_size), e.g. {EXAMPLES}")


def portable_copy(path: Path) -> bytes:
    """The benchmark file's bytes for a run directory: unchanged, except that a relative
    ``image_folder`` becomes absolute, so the copy finds the images wherever it is read from."""
    data = _load(path)
    if "image_folder" not in data:
        return path.read_bytes()
    return yaml.safe_dump({**data, "image_folder": str(image_folder_root(path, data))}, sort_keys=False).encode()
