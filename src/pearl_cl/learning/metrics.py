"""Continual-learning metrics from an accuracy matrix, and cost accounting.

The accuracy matrix R has ``R[i, j]`` = accuracy (%) on task j's test set after training task i
(0-based here, 1-based in tables), with NaN for j > i (tasks not seen yet). Definitions:

* average accuracy A_T = (1/T) Σ_j R[T−1, j] (Chaudhry et al., "Riemannian Walk", ECCV 2018);
* average incremental accuracy = (1/T) Σ_i A_i, A_i the average accuracy after task i
  (Rebuffi et al., "iCaRL", CVPR 2017);
* forgetting = (1/(T−1)) Σ_{j<T−1} max_{l∈[j, T−2]} (R[l, j] − R[T−1, j]) (Chaudhry et al. 2018);
* backward transfer BWT = (1/(T−1)) Σ_{j<T−1} (R[T−1, j] − R[j, j]) (Lopez-Paz & Ranzato,
  "GEM", NeurIPS 2017);
* forward transfer FWT = (1/(T−1)) Σ_{j≥1} (R[j−1, j] − b_j), b_j the accuracy on task j of the
  network at initialisation (Lopez-Paz & Ranzato 2017, Section 2): how much learning the earlier
  tasks helps a task before it is learned.

Every task weighs the same, whatever its number of test images: the task accuracy is computed
first from its own counts, then averaged.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import numpy as np


def task_accuracy(correct: int, total: int) -> float:
    """Accuracy in % of ``correct`` out of ``total`` test images.

    Raises:
        ValueError: ``total`` is 0 or ``correct`` is outside ``[0, total]``.
    """
    if total <= 0 or not 0 <= correct <= total:
        raise ValueError(f"need 0 <= correct <= total and total > 0, got correct={correct}, total={total}")
    return 100.0 * correct / total


def accuracy_matrix(correct: np.ndarray, total: np.ndarray) -> np.ndarray:
    """``(T, T)`` accuracy matrix in % from correct counts ``(T, T)`` and test sizes ``(T,)``.

    ``correct[i, j]`` for j > i is ignored and becomes NaN.
    """
    correct = np.asarray(correct, dtype=np.float64)
    total = np.asarray(total, dtype=np.float64)
    acc = 100.0 * correct / total[None, :]
    acc[np.triu_indices(len(total), k=1)] = np.nan
    return acc


def average_accuracy(acc: np.ndarray, after: int | None = None) -> float:
    """Mean of row ``after`` (default: the last) of the ``(T, T)`` matrix ``acc`` over the tasks
    seen by then, in % (Chaudhry et al. 2018)."""
    i = acc.shape[0] - 1 if after is None else after
    return float(np.mean(acc[i, : i + 1]))


def average_incremental_accuracy(acc: np.ndarray) -> float:
    """Mean over i of the average accuracy after task i of the ``(T, T)`` matrix ``acc``, in %
    (Rebuffi et al. 2017)."""
    return float(np.mean([average_accuracy(acc, i) for i in range(acc.shape[0])]))


def forgetting(acc: np.ndarray) -> float:
    """Average forgetting of the tasks before the last in the ``(T, T)`` matrix ``acc``, in
    percentage points (0 for T = 1; Chaudhry et al. 2018)."""
    t = acc.shape[0]
    if t < 2:
        return 0.0
    drops = [np.max(acc[j : t - 1, j]) - acc[t - 1, j] for j in range(t - 1)]
    return float(np.mean(drops))


def backward_transfer(acc: np.ndarray) -> float:
    """BWT of the ``(T, T)`` matrix ``acc`` in percentage points (negative: forgetting; 0 for
    T = 1; Lopez-Paz & Ranzato 2017)."""
    t = acc.shape[0]
    if t < 2:
        return 0.0
    return float(np.mean([acc[t - 1, j] - acc[j, j] for j in range(t - 1)]))


def forward_transfer(ahead: np.ndarray, initial: np.ndarray) -> float:
    """FWT in percentage points from ``ahead`` ``(T,)``, ``ahead[j]`` = R[j−1, j] the accuracy
    (%) on task j after learning task j − 1 (``ahead[0]`` unused), and ``initial`` ``(T,)``, the
    accuracy (%) of the network at initialisation on each task (Lopez-Paz & Ranzato 2017); 0 for
    T = 1."""
    t = len(ahead)
    if t < 2:
        return 0.0
    return float(np.mean([ahead[j] - initial[j] for j in range(1, t)]))


def summarise(acc: np.ndarray) -> dict[str, float]:
    """The four metrics above, keyed ``average_accuracy``, ``average_incremental_accuracy``,
    ``forgetting``, ``bwt`` (all in % or percentage points)."""
    return {
        "average_accuracy": average_accuracy(acc),
        "average_incremental_accuracy": average_incremental_accuracy(acc),
        "forgetting": forgetting(acc),
        "bwt": backward_transfer(acc),
    }


def percent_of(count: int, whole: int) -> float:
    """``count`` as a percentage of ``whole``, e.g. parameters added against the backbone's."""
    return 100.0 * count / whole


STATUS = Path("/proc/self/status")


def reset_peak_rss() -> bool:
    """Reset this process's peak resident set size to its current size, so that
    :func:`peak_rss_bytes` measures from now on (Linux ≥ 4.0: write 5 to
    ``/proc/self/clear_refs``). Returns False where that is not possible; the peak then stays
    the whole process's."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_bytes() -> int:
    """Peak resident set size in bytes: since the last :func:`reset_peak_rss` (``VmHWM`` of
    ``/proc/self/status``) on Linux, else of the whole process (``getrusage``)."""
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)
