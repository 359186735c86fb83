"""Routers on constructed cases whose answer is known, the oracle bound, and saved statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pearl_cl import run
from pearl_cl.config import RoutingConfig
from pearl_cl.engine.store import RunStore
from pearl_cl.routers.base import get_router, route
from pearl_cl.routers.reference import reference_scores
from pearl_cl.routers.statistics import TaskStatistics, mahalanobis_sq, score_mahalanobis, task_statistics, whitening

from conftest import small_config


class TwoBranches(nn.Module):
    """Two tasks on 4-d inputs: task0's branch sees dims 0–1, task1's dims 2–3; each head is
    3·identity, so a branch is confident only on images with energy in its own dims.
    ``task0`` is the reference branch."""

    def __init__(self) -> None:
        super().__init__()
        self.reference_task = "task0"
        self.heads = nn.ModuleDict({t: nn.Linear(2, 2, bias=False) for t in ("task0", "task1")})
        for head in self.heads.values():
            head.weight.data = 3.0 * torch.eye(2)

    def features(self, x: torch.Tensor, task: str) -> torch.Tensor:
        return x[:, :2] if task == "task0" else x[:, 2:]

    def forward(self, x: torch.Tensor, task: str) -> torch.Tensor:
        return self.heads[task](self.features(x, task))


def _images(task: int, classes: list[int]) -> torch.Tensor:
    x = torch.zeros(len(classes), 4)
    for i, c in enumerate(classes):
        x[i, 2 * task + c] = 5.0
    return x


ROUTING = RoutingConfig(shrinkage=0.5, random_features=64, fit_all=True)


def _stats(model: TwoBranches) -> list[TaskStatistics]:
    stats = []
    for t, name in enumerate(("task0", "task1")):
        x = _images(t, [0, 1, 0, 1])
        x = x + 0.1 * torch.tensor([[1.0, -1, 1, -1], [-1, 1, -1, 1], [1, 1, -1, -1], [-1, -1, 1, 1]])
        stats.append(task_statistics(model, name, 2, x, torch.tensor([0, 1, 0, 1]), x, ROUTING))
    return stats


@pytest.mark.parametrize("router", ["max_prob", "entropy", "energy", "mahalanobis", "reference", "fecam",
                                    "likelihood-ratio"])
def test_each_router_picks_the_branch_that_knows_the_image(router):
    model = TwoBranches()
    stats = _stats(model)
    if router == "reference":  # the reference branch sees task0's dims only: give it every dim
        model.features = lambda x, task: x if task == "task0" else x[:, 2:]
        model.heads["task0"] = nn.Linear(4, 2, bias=False)
        model.heads["task0"].weight.data = 3.0 * torch.eye(2, 4)
        stats = _stats(model)
    x = torch.cat([_images(0, [0, 1, 1]), _images(1, [1, 0, 0])])
    pred, chosen = route(model, x, ["task0", "task1"], [(0, 1), (2, 3)], stats, get_router(router), ROUTING)
    assert chosen.tolist() == [0, 0, 0, 1, 1, 1]
    assert pred.tolist() == [0, 1, 1, 3, 2, 2]


def test_class_il_is_routing_and_task_il_together():
    """Four images of task0: the router sends the faint one to task1, and branch0 gets one of the
    three it receives wrong, so Class-IL is 2/4 although Task-IL is 3/4 and routing 3/4."""
    model = TwoBranches()
    model.heads["task0"].weight.data = torch.tensor([[3.0, 0.0], [0.0, 3.0]])
    stats = _stats(model)
    x = _images(0, [0, 1, 0, 0])
    x[3] = torch.tensor([0.0, 0.0, 0.0, 4.0])  # class 0 of task0 in name, but it looks like task1's class 3
    x[2] = torch.tensor([1.0, 4.0, 0.0, 0.0])  # branch0 will say class 1: a Task-IL error
    labels = torch.tensor([0, 1, 0, 0])
    pred, chosen = route(model, x, ["task0", "task1"], [(0, 1), (2, 3)], stats, get_router("mahalanobis"), ROUTING)
    task_il = (model(x, "task0").argmax(1) == labels)
    routed = chosen == 0
    assert task_il.tolist() == [True, True, False, True]  # the faint image ties at logits (0, 0) -> class 0
    assert routed.tolist() == [True, True, True, False]
    assert (pred == labels).tolist() == (task_il & routed).tolist()
    assert float((pred == labels).float().mean()) == 0.5


def test_scores_on_known_logits():
    logits = torch.tensor([[10.0, 0.0], [0.0, 0.0]])
    max_prob, entropy, energy = (get_router(name).score(logits, None, None) for name in ("max_prob", "entropy", "energy"))
    assert max_prob[0] > 0.99 and max_prob[1] == pytest.approx(0.5)
    assert entropy[1] == pytest.approx(-1.0) and entropy[0] > -0.01
    assert energy[1] == pytest.approx(float(np.log(2.0)))
    feats = torch.tensor([[1.0, 0.0], [3.0, 4.0]], dtype=torch.float64)
    means = torch.zeros(1, 2, dtype=torch.float64)
    assert score_mahalanobis(feats, means, torch.eye(2, dtype=torch.float64)).tolist() == [-1.0, -25.0]


def test_reference_scores_pool_the_covariance_over_tasks():
    def kept(mean: float, scatter: float) -> TaskStatistics:
        return TaskStatistics({"reference": {"means": torch.tensor([[mean]], dtype=torch.float64), "count": torch.tensor([4]),
                                             "scatter": torch.tensor([[scatter]], dtype=torch.float64)}}, {})

    a, b = kept(0.0, 4.0), kept(10.0, 12.0)
    # pooled variance (4 + 12) / 8 = 2, no shrinkage: x = 4 -> -(16 / 2) for a, -(36 / 2) for b
    scores = reference_scores(torch.tensor([[4.0]]), [a, b], shrinkage=0.0)
    assert scores[:, 0].tolist() == pytest.approx([-8.0, -18.0], rel=1e-12)  # whitened: sqrt rounding only


@pytest.mark.slow
def test_oracle_router_gives_class_il_equal_to_task_il(tmp_path):
    result = run(small_config(tmp_path, routing__router="oracle", data__train_per_task=300, data__test_per_task=100,
                              train__epochs=1, train__reference_epochs=1))
    task_il, class_il = result.accuracy["task-il"], result.accuracy["class-il"]
    np.testing.assert_array_equal(class_il, task_il)
    lower = np.tril_indices(5)
    assert (result.routing[lower] == 100.0).all()
    assert result.metrics["routing"]["accuracy"] == 100.0


def test_router_statistics_survive_save_and_load(tmp_path):
    model = TwoBranches()
    stats = _stats(model)[1]
    store = RunStore(tmp_path / "run")
    store.write_tensors("stats.safetensors", stats.to_tensors())
    loaded = TaskStatistics.from_tensors(RunStore(tmp_path / "run").read_tensors("stats.safetensors"))
    for key, value in stats.to_tensors().items():
        assert torch.equal(value, loaded.to_tensors()[key]), key
    x = _images(1, [0, 1])
    assert torch.equal(route(model, x, ["task0", "task1"], [(0, 1), (2, 3)], [_stats(model)[0], loaded],
                             get_router("mahalanobis"), ROUTING)[1], torch.tensor([1, 1]))


def test_whitened_mahalanobis_equals_the_quadratic_form():
    torch.manual_seed(0)
    a = torch.randn(6, 6, dtype=torch.float64)
    precision = a @ a.T + torch.eye(6, dtype=torch.float64)
    feats, means = torch.randn(5, 6, dtype=torch.float64), torch.randn(3, 6, dtype=torch.float64)
    diff = feats[:, None, :] - means[None]
    expected = torch.einsum("nkd,de,nke->nk", diff, precision, diff)
    assert torch.allclose(mahalanobis_sq(feats, means, whitening(precision)), expected, rtol=1e-10)
