"""CL metrics on a hand-computed accuracy matrix, tasks of unequal size included."""

from __future__ import annotations

import numpy as np
import pytest

from pearl_cl.learning import metrics

# Three tasks with 10, 20 and 50 test images. correct[i, j] after training task i:
CORRECT = np.array([[9, 0, 0], [8, 18, 0], [7, 16, 25]])
TOTAL = np.array([10, 20, 50])
# accuracies (%): row 0: 90; row 1: 80, 90; row 2: 70, 80, 50


def test_accuracy_matrix_uses_each_tasks_own_size():
    acc = metrics.accuracy_matrix(CORRECT, TOTAL)
    expected = np.array([[90, np.nan, np.nan], [80, 90, np.nan], [70, 80, 50]], dtype=float)
    np.testing.assert_allclose(acc, expected)


def test_summary_by_hand():
    acc = metrics.accuracy_matrix(CORRECT, TOTAL)
    # Task-averaged, not pooled over images: pooled would be (7 + 16 + 25) / 80 = 60%.
    assert metrics.average_accuracy(acc) == pytest.approx((70 + 80 + 50) / 3)
    assert metrics.average_accuracy(acc, after=1) == pytest.approx(85.0)
    assert metrics.average_incremental_accuracy(acc) == pytest.approx((90 + 85 + 200 / 3) / 3)
    # forgetting: task 1 max(90, 80) - 70 = 20; task 2 max(90) - 80 = 10 -> 15
    assert metrics.forgetting(acc) == pytest.approx(15.0)
    # BWT: (70 - 90) + (80 - 90) -> -15
    assert metrics.backward_transfer(acc) == pytest.approx(-15.0)


def test_forgetting_uses_the_best_earlier_accuracy_not_the_first():
    acc = np.array([[50, np.nan, np.nan], [80, 60, np.nan], [70, 60, 90]], dtype=float)
    assert metrics.forgetting(acc) == pytest.approx(((80 - 70) + (60 - 60)) / 2)
    assert metrics.backward_transfer(acc) == pytest.approx(((70 - 50) + (60 - 60)) / 2)


def test_no_forgetting_when_rows_repeat():
    acc = metrics.accuracy_matrix(np.array([[9, 0], [9, 17]]), np.array([10, 20]))
    s = metrics.summarise(acc)
    assert s["forgetting"] == 0.0 and s["bwt"] == 0.0
    assert s["average_accuracy"] == pytest.approx((90 + 85) / 2)


def test_single_task():
    acc = metrics.accuracy_matrix(np.array([[3]]), np.array([4]))
    assert metrics.summarise(acc) == {"average_accuracy": 75.0, "average_incremental_accuracy": 75.0,
                                      "forgetting": 0.0, "bwt": 0.0}


def test_task_accuracy_rejects_impossible_counts():
    assert metrics.task_accuracy(1, 4) == 25.0
    for correct, total in ((1, 0), (5, 4), (-1, 4)):
        with pytest.raises(ValueError):
            metrics.task_accuracy(correct, total)


def test_peak_rss_is_plausible():
    peak = metrics.peak_rss_bytes()
    assert 10 * 2**20 < peak < 64 * 2**30
