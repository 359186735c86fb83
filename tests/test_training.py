"""The shared fit loop: iteration budgets, extra loss terms and step hooks; the protocol preset;
per-run peak memory."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from pearl_cl.config import load_config, validate
from pearl_cl.errors import ConfigError
from pearl_cl.learning.training import FitSettings, fit


def _data(n: int = 40):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 1, 2, 2, generator=g), torch.randint(0, 2, (n,), generator=g)


@pytest.mark.parametrize("iterations, expected", [(None, 2 * 3), (7, 7), (2, 2)])
def test_fit_takes_exactly_the_iterations_asked_for(iterations, expected):
    x, y = _data()  # 40 images in batches of 16: 3 batches per pass
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    steps = []
    fit(net, net, net.parameters(), x, y, FitSettings(2, 16, 0.01, iterations=iterations), seed=0,
        after_step=lambda: steps.append(1))
    assert len(steps) == expected


def test_extra_loss_enters_the_gradient():
    x, y = _data()
    nets = [nn.Sequential(nn.Flatten(), nn.Linear(4, 2)) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    weight = nets[1][1].weight
    fit(nets[0], nets[0], nets[0].parameters(), x, y, FitSettings(1, 40, 0.1), seed=0)
    stats = fit(nets[1], nets[1], nets[1].parameters(), x, y, FitSettings(1, 40, 0.1), seed=0,
                extra_loss=lambda xb, logits: 100.0 * (weight**2).sum())
    assert stats.final_loss > 1.0
    assert weight.abs().sum() < nets[0][1].weight.abs().sum()  # the L2 term pulled the weights in


def test_iterations_must_be_positive():
    with pytest.raises(ConfigError, match="train.iterations"):
        load_config(train__iterations=0).fit_settings("train.epochs", "train.lr")
    assert load_config(train__iterations=5).fit_settings("pearl.probe_epochs", "train.lr", iterations=False).iterations is None


def test_classic_protocol_sets_the_literature_values_and_overrides_apply_on_top():
    config = load_config(None, ["train.iterations=10"], protocol="classic-split-mnist")
    assert (config.backbone.name, config.backbone.width, config.train.optimizer) == ("mlp", 1.0, "adam")
    assert (config.train.lr, config.train.batch_size, config.train.iterations) == (0.001, 128, 10)
    assert (config.train.reset_optimizer, config.lwf.variant, config.data.shuffle_classes) == (False, "van-de-ven", True)
    assert config.lwf.reduction == "mean" and load_config().lwf.reduction == "sum"
    assert config.data.class_order == "van-de-ven" and load_config().data.class_order == "seeded"
    assert not config.data.standardise and load_config().data.standardise
    with pytest.raises(ConfigError, match="unknown protocol 'classic'; choose one of: classic-split-mnist"):
        load_config(protocol="classic")


@pytest.mark.parametrize("key, value", [("ewc.lambda", -1.0), ("online-ewc.gamma", 1.5), ("online-ewc.lambda", -1.0), ("si.xi", 0.0), ("lwf.temperature", 0.0),
                                        ("ewc.fisher_samples", 0), ("si.c", float("nan")), ("lora.rank", 0)])
def test_method_hyperparameters_out_of_range_name_their_key(key, value):
    config = load_config(**{key.replace(".", "__"): value})
    with pytest.raises(ConfigError, match=f"{key} must be"):
        validate(config)


def test_an_unknown_lwf_reduction_names_the_choices():
    with pytest.raises(ConfigError, match="unknown lwf.reduction 'median'; choose one of: sum, mean"):
        validate(load_config(lwf__reduction="median"))


PEAK_RESET = """
import torch
from pearl_cl.learning.metrics import peak_rss_bytes, reset_peak_rss
assert reset_peak_rss()
before = peak_rss_bytes()
block = torch.ones(50_000_000)  # 200 MB, touched
grown = peak_rss_bytes()
del block
assert grown >= before + 150e6, (before, grown)
reset_peak_rss()
assert peak_rss_bytes() < grown - 150e6
"""


def test_peak_memory_can_be_reset_between_runs():
    """In a fresh process: in the test process, memory freed by earlier tests can be reused
    without the resident size growing, and the check would depend on test order."""
    done = subprocess.run([sys.executable, "-c", PEAK_RESET], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
