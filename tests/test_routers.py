"""Routers against the Bayes-optimal task choice on constructed Gaussian tasks, calibration of
branches that differ only in scale, statistics from a sample, and a run directory that keeps
statistics only (rehearsal-free)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from pearl_cl import run
from pearl_cl.config import RoutingConfig, validate
from pearl_cl.errors import ConfigError
from pearl_cl.registry import ROUTERS
from pearl_cl.routers.base import get_router, route
from pearl_cl.routers.statistics import (class_statistics, statistics_sample, streamed_class_statistics, task_features,
                                         task_statistics)

from conftest import small_config

GAUSSIAN_ROUTERS = ["mahalanobis", "fecam", "reference", "likelihood-ratio"]


class SharedBranches(nn.Module):
    """Every branch passes its ``(N, D)`` input through unchanged; heads are random, so routing is
    decided by the statistics alone. ``task0`` is the reference branch."""

    def __init__(self, tasks: int, dim: int) -> None:
        super().__init__()
        self.reference_task = "task0"
        torch.manual_seed(0)
        self.heads = nn.ModuleDict({f"task{t}": nn.Linear(dim, 2) for t in range(tasks)})

    def features(self, x: torch.Tensor, task: str) -> torch.Tensor:
        return x

    def forward(self, x: torch.Tensor, task: str) -> torch.Tensor:
        return self.heads[task](x)


def gaussian_tasks(covariances: list[torch.Tensor], seed: int) -> tuple[torch.Tensor, list[torch.distributions.MultivariateNormal]]:
    """Class means of 3 tasks × 2 classes in D dims (offset by +20 so every feature is positive,
    like ReLU features) and one Gaussian per class with ``covariances[c]``."""
    g = torch.Generator().manual_seed(seed)
    dim = covariances[0].shape[0]
    means = 20.0 + 2.5 * torch.randn(6, dim, generator=g, dtype=torch.float64)
    return means, [torch.distributions.MultivariateNormal(m, covariance_matrix=covariances[c]) for c, m in enumerate(means)]


def bayes_and_router_choices(covariances: list[torch.Tensor], router: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """True task, Bayes-optimal task (equal priors) and the router's task for 3,000 test points."""
    _, classes = gaussian_tasks(covariances, seed=1)
    torch.manual_seed(2)
    model = SharedBranches(3, covariances[0].shape[0])
    stats = []
    for t in range(3):
        x = torch.cat([classes[2 * t + k].sample((2000,)) for k in range(2)]).float()
        y = torch.arange(2).repeat_interleave(2000)
        val = torch.cat([classes[2 * t + k].sample((200,)) for k in range(2)]).float()
        stats.append(task_statistics(model, f"task{t}", 2, x, y, val, RoutingConfig(shrinkage=1e-4, sample=None,
                                                                                       random_features=512, router=router)))
    labels = torch.arange(6).repeat_interleave(500)
    x = torch.cat([classes[c].sample((500,)) for c in range(6)])
    loglik = torch.stack([c.log_prob(x) for c in classes], dim=1)
    bayes = torch.logsumexp(loglik.view(-1, 3, 2), dim=2).argmax(dim=1)
    _, chosen = route(model, x.float(), ["task0", "task1", "task2"], [(0, 1), (2, 3), (4, 5)], stats,
                      get_router(router), RoutingConfig(shrinkage=1e-4))
    return labels // 2, bayes, chosen


def random_covariance(dim: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(dim, dim, generator=g, dtype=torch.float64)
    return a @ a.T / dim + 0.5 * torch.eye(dim, dtype=torch.float64)


@pytest.mark.parametrize("router", GAUSSIAN_ROUTERS)
def test_gaussian_routers_agree_with_the_bayes_choice_when_classes_share_a_covariance(router):
    truth, bayes, chosen = bayes_and_router_choices([random_covariance(5, 3)] * 6, router)
    bayes_accuracy = (bayes == truth).double().mean()
    assert 0.6 < bayes_accuracy < 0.995  # the tasks overlap: there is something to get wrong
    assert (chosen == bayes).double().mean() >= 0.96
    assert (chosen == truth).double().mean() >= bayes_accuracy - 0.02


def rotated_covariance(eigenvalues: torch.Tensor, seed: int) -> torch.Tensor:
    """Q·diag(eigenvalues)·Qᵀ with a random rotation Q: the same determinant for every seed."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(len(eigenvalues), len(eigenvalues), generator=g, dtype=torch.float64))
    return q @ torch.diag(eigenvalues) @ q.T


def test_fecam_follows_per_class_covariances_where_a_shared_one_cannot():
    """Classes of one volume (so the Bayes choice is the nearest class by each class's own
    Mahalanobis distance, FeCAM's rule) but different shapes."""
    eigenvalues = torch.tensor([25.0, 4.0, 1.0, 0.25, 0.04], dtype=torch.float64)
    covariances = [rotated_covariance(eigenvalues, 10 + c) for c in range(6)]
    agreement = {}
    for router in ("fecam", "mahalanobis"):
        _, bayes, chosen = bayes_and_router_choices(covariances, router)
        agreement[router] = float((chosen == bayes).double().mean())
    assert agreement["fecam"] >= 0.96
    assert agreement["fecam"] > agreement["mahalanobis"] + 0.02


class ScaledBranches(nn.Module):
    """Two tasks on 4-d inputs, branch t reads dims 2t, 2t+1; branch 1's head is 1000 times branch
    0's, so its raw confidence is larger on every image, its own or not."""

    def __init__(self) -> None:
        super().__init__()
        self.reference_task = "task0"
        self.heads = nn.ModuleDict({t: nn.Linear(2, 2, bias=False) for t in ("task0", "task1")})
        self.heads["task0"].weight.data = torch.eye(2)
        self.heads["task1"].weight.data = 1000.0 * torch.eye(2)

    def features(self, x: torch.Tensor, task: str) -> torch.Tensor:
        return x[:, :2] if task == "task0" else x[:, 2:]

    def forward(self, x: torch.Tensor, task: str) -> torch.Tensor:
        return self.heads[task](self.features(x, task))


def scaled_images(task: int, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of ``task``: its class's own dim near 5.5, every other dim near 0.5 (std 0.3)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = 0.5 + 0.3 * torch.randn(n, 4, generator=g)
    x[torch.arange(n), 2 * task + y] += 5.0
    return x, y


def test_calibration_removes_a_branch_advantage_of_scale_alone():
    """With the energy score (a logsumexp: it grows with the logits' scale, without saturating)."""
    router = "energy"
    model = ScaledBranches()
    routing = RoutingConfig(router=router)
    stats = [task_statistics(model, f"task{t}", 2, *scaled_images(t, 200, t), scaled_images(t, 200, 10 + t)[0], routing)
             for t in range(2)]
    x0, _ = scaled_images(0, 300, 20)
    raw = torch.stack([get_router(router).score(model(x0, f"task{t}"), None, {}) for t in range(2)])
    assert (raw.argmax(dim=0) == 1).double().mean() > 0.9  # by scale alone, branch 1 wins task 0's images
    _, chosen = route(model, x0, ["task0", "task1"], [(0, 1), (2, 3)], stats, get_router(router), routing)
    assert (chosen == 0).double().mean() > 0.95


def test_statistics_of_every_image_equal_those_of_a_separate_pass():
    model = SharedBranches(2, 3)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(400, 3, generator=g), torch.arange(400) % 2
    data = task_features(model, "task1", 2, x, y, x[:50], sample=None)
    means, scatter = class_statistics(torch.cat([x, x], dim=1), y, 2)
    kept = task_statistics(model, "task1", 2, x, y, x[:50], RoutingConfig(sample=None, router="reference")).of("reference")
    assert torch.equal(data.labels, y) and torch.equal(data.joint, torch.cat([x, x], dim=1))
    assert torch.allclose(kept["means"], means[:, :3], atol=1e-12)
    assert torch.allclose(kept["scatter"], scatter[:3, :3], atol=1e-9)


def test_class_statistics_streamed_in_batches_equal_those_of_all_features_at_once():
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(900, 40, generator=g, dtype=torch.float64) + 3.0, torch.randint(0, 4, (900,), generator=g)
    means, scatter = class_statistics(x, y, 4)
    streamed = streamed_class_statistics(((x[s : s + 128], y[s : s + 128]) for s in range(0, 900, 128)), 4)
    assert torch.allclose(streamed[0], means, rtol=0, atol=1e-12)
    assert torch.allclose(streamed[1], scatter, rtol=1e-10, atol=1e-10) and not torch.allclose(scatter, x.T @ x)


def test_statistics_of_a_sample_are_within_their_standard_error():
    """``routing.sample`` images, evenly spaced over the (shuffled) training split: each class
    mean differs from the full one by less than 4 standard errors σ·√((1 − n/N)/n)."""
    model = SharedBranches(2, 8)
    g = torch.Generator().manual_seed(1)
    total, sample = 6000, 600
    y = torch.randint(0, 2, (total,), generator=g)
    x = torch.randn(total, 8, generator=g) * (1.0 + torch.arange(8)) + 3.0 * y[:, None]
    idx = statistics_sample(total, sample)
    assert len(idx) == sample and torch.equal(idx, idx.sort().values)
    full = task_statistics(model, "task1", 2, x, y, x[:50], RoutingConfig(sample=None, router="reference")).of("reference")["means"]
    part = task_statistics(model, "task1", 2, x, y, x[:50], RoutingConfig(sample=sample, router="reference")).of("reference")["means"]
    for k in range(2):
        n, big = int((y[idx] == k).sum()), int((y == k).sum())
        error = x[y == k].double().std(dim=0) * ((1 - n / big) / n) ** 0.5
        assert ((part[k] - full[k]).abs() < 4 * error).all()
    assert not torch.equal(part, full)


@pytest.mark.slow
def test_a_run_directory_keeps_statistics_and_parameters_only(tmp_path):
    """No tensor saved by a run has a dimension of the number of training, validation or sample
    images (333, 37, 111 here, none of them a width of the network or the random features): an
    image, feature vector or per-image score kept would have one."""
    result = run(small_config(tmp_path, backbone__name="mlp", data__train_per_task=370, data__val_fraction=0.1,
                              data__test_per_task=50, routing__sample=111, routing__random_features=64,
                              routing__fit_all=True))
    files = sorted(Path(result.directory, "tasks").glob("*.safetensors"))
    assert len(files) == 5
    for path in files:
        tensors = load_file(path)
        assert any(k.startswith("router.likelihood-ratio.") for k in tensors)
        width = tensors["head.weight"].shape[1]  # D: the branch's and the reference's feature width
        for key, tensor in tensors.items():
            assert not {333, 37, 111} & set(tensor.shape), (path.name, key, tuple(tensor.shape))
            if key.startswith("router."):  # per-class or per-task statistics: every dim K, D, 2D, M, or a count
                assert set(tensor.shape) <= {1, 2, width, 2 * width, 64}, (path.name, key, tuple(tensor.shape))


@pytest.mark.parametrize("values, message", [
    ({"routing__sample": 1}, "routing.sample must be at least 2"),
    ({"routing__random_features": 0}, "routing.random_features must be a positive width"),
    ({"routing__router": "fecm"}, "fecam"),
])
def test_bad_routing_settings_name_the_key(tmp_path, values, message):
    with pytest.raises(ConfigError, match=message):
        validate(small_config(tmp_path, **values))


def test_a_sample_that_leaves_a_class_without_images_is_refused():
    model = SharedBranches(2, 3)
    x, y = torch.randn(100, 3), torch.zeros(100, dtype=torch.long)
    y[50] = 1  # the one image of class 1 falls between the 10 evenly spaced ones
    with pytest.raises(ConfigError, match="routing.sample=10 leaves class 1 of task task1 with 0 image"):
        task_statistics(model, "task1", 2, x, y, x[:10], RoutingConfig(sample=10, router="mahalanobis"))


def test_only_the_chosen_router_is_fitted_unless_all_are_asked_for():
    model = SharedBranches(2, 3)
    x, y = torch.randn(60, 3), torch.arange(60) % 2
    chosen = task_statistics(model, "task1", 2, x, y, x[:10], RoutingConfig(router="fecam"))
    assert set(chosen.routers) == {"fecam"} and set(chosen.calibration) == {"fecam"}
    with pytest.raises(ConfigError, match="routing.fit_all=true"):
        chosen.of("mahalanobis")
    assert chosen.of("energy") == {}  # a router that keeps nothing can always route
    every = task_statistics(model, "task1", 2, x, y, x[:10], RoutingConfig(fit_all=True, random_features=16))
    assert {n for n, r in ROUTERS.items() if r.keeps} == set(every.routers)
