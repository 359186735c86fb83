"""The built-in benchmarks and the facts about each dataset (our design, after the literature's protocols).

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
* Graded-MNIST (our design, :mod:`pearl_cl.data.graded`): a 5-class MNIST reference task, then
  twelve 5-class tasks whose distance from it is graded by construction (a copy, permuted and
  rotated digits of growing strength, new digits, clothing, animal shapes).
* Any class split can be re-cut with ``data.classes_per_task`` and ``data.first_task_classes``
  (PyCIL's ``init_cls`` and ``increment``): a large first task, then smaller ones; the last
  task takes what is left, so tasks may differ in size.
* Seq-mixed (our design, after the cross-dataset sequences of the literature such as
  Ebrahimi et al.'s "5-datasets", ECCV 2020): 15 tasks of 2 classes, MNIST (0,1) … (8,9), then
  Fashion-MNIST's, then the animal silhouettes', all 28×28 grey
  (:func:`~pearl_cl.data.sources.load_mixed`). The first task is MNIST, so the later MNIST tasks
  sit near the reference and the clothing and animal tasks far from it: the case PEARL's
  dynamic rank exists for.
"""

from __future__ import annotations

from dataclasses import dataclass

from pearl_cl.data.graded import DISTANCES as GRADED_DISTANCES
from pearl_cl.registry import BENCHMARKS

IMAGE_FOLDER = "image-folder"  # the dataset of a benchmark file over a user image tree (pearl_cl.data.folder)


@dataclass(frozen=True)
class BenchmarkSpec:
    """How a benchmark cuts a dataset: ``n_tasks`` tasks of ``classes_per_task`` classes.

    ``mean`` and ``std`` (per channel, on pixels scaled to [0, 1]) normalise the images.
    ``scenario`` is how the benchmark is evaluated without task labels: ``class-il`` (disjoint
    classes) or ``domain-il`` (one shared label set). ``shift`` is what tells domain-IL tasks
    apart: ``permute`` or ``rotate`` (``none`` for class splits). ``task_classes``, when given
    (a user-defined benchmark), lists each task's classes and replaces the even split. A
    benchmark over a user image folder has ``dataset`` :data:`IMAGE_FOLDER`, the tree's absolute
    path in ``folder`` and the (H, W) to resize to, if any, in ``image_size``; its ``mean`` and
    ``std`` are measured on its training images when it loads. ``task_distances``, when given,
    is each task's distance from the first by construction (an ordinal level; ``graded-mnist``).
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
    folder: str = ""
    image_size: tuple[int, int] | None = None
    task_distances: tuple[int, ...] = ()


# per dataset: number of classes, and mean and std of its training pixels scaled to [0, 1]
DATASET_FACTS: dict[str, tuple[int, tuple[float, ...], tuple[float, ...]]] = {
    "mnist": (10, (0.1307,), (0.3081,)),
    "fashion-mnist": (10, (0.2860,), (0.3530,)),
    "animal-mnist": (10, (0.2735,), (0.4057,)),  # our 7,775 training images (pearl_cl.data.animal)
    "mixed": (30, (0.2123,), (0.3450,)),  # the 127,775 training images of the three parts together
    "graded": (65, (0.1307,), (0.3081,)),  # MNIST's statistics: the reference task's images (pearl_cl.data.graded)
    # CIFAR: the training-set statistics the CL libraries use (mammoth's seq-cifar10 / seq-cifar100)
    "cifar10": (10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": (100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "tinyimagenet": (200, (0.4802, 0.4480, 0.3975), (0.2770, 0.2691, 0.2821)),  # mammoth's seq-tinyimg
}
_MNIST, _FASHION = DATASET_FACTS["mnist"][1:], DATASET_FACTS["fashion-mnist"][1:]


def register_benchmark(spec: BenchmarkSpec, default: bool = False) -> BenchmarkSpec:
    """Register ``spec`` as a built-in benchmark under its name (``default``: the config's
    default benchmark); returns it."""
    return BENCHMARKS.add(spec.name, spec, default)


register_benchmark(BenchmarkSpec("split-mnist", "mnist", 5, 2, "class-il", *_MNIST), default=True)
register_benchmark(BenchmarkSpec("split-fashion-mnist", "fashion-mnist", 5, 2, "class-il", *_FASHION))
register_benchmark(BenchmarkSpec("permuted-mnist", "mnist", 10, 10, "domain-il", *_MNIST, "permute"))
register_benchmark(BenchmarkSpec("rotated-mnist", "mnist", 5, 10, "domain-il", *_MNIST, "rotate"))
register_benchmark(BenchmarkSpec("split-cifar10", "cifar10", 5, 2, "class-il", *DATASET_FACTS["cifar10"][1:]))
register_benchmark(BenchmarkSpec("split-cifar100-10x10", "cifar100", 10, 10, "class-il", *DATASET_FACTS["cifar100"][1:]))
register_benchmark(BenchmarkSpec("split-cifar100-5x20", "cifar100", 5, 20, "class-il", *DATASET_FACTS["cifar100"][1:]))
register_benchmark(BenchmarkSpec("seq-mixed", "mixed", 15, 2, "class-il", *DATASET_FACTS["mixed"][1:]))
register_benchmark(BenchmarkSpec("graded-mnist", "graded", 13, 5, "class-il", *DATASET_FACTS["graded"][1:],
                                 task_distances=(0, *GRADED_DISTANCES)))
register_benchmark(BenchmarkSpec("split-tinyimagenet", "tinyimagenet", 10, 20, "class-il",
                                 *DATASET_FACTS["tinyimagenet"][1:]))

BENCHMARK_FILE_SUFFIXES = (".yaml", ".yml")
