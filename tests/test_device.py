"""Device and precision selection (device.py): what runs here on the CPU; the CUDA path itself is
exercised by benchmarks/gpu_check.sh on a machine with a GPU."""

from __future__ import annotations

import json

import pytest
import torch

from pearl_cl import device
from pearl_cl.commands.cli import main
from pearl_cl.errors import ConfigError


def _expected_auto() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", 0)
    return torch.device("mps") if torch.backends.mps.is_available() else torch.device("cpu")


def test_auto_takes_cuda_then_mps_then_the_cpu():
    assert device.resolve("auto") == _expected_auto()
    assert device.resolve("cpu") == torch.device("cpu") and "cpu" in device.available()


@pytest.mark.parametrize("name, message", [
    (f"cuda:{torch.cuda.device_count()}", "is not available here; this machine has: cpu"),
    ("tpu", "is not a device name"),
    ("cuda:x", "is not a device name"),
])
def test_a_device_this_machine_lacks_names_the_ones_it_has(name, message):
    with pytest.raises(ConfigError, match=f"train.device={name!r} {message}"):
        device.resolve(name)


def test_half_precision_needs_cuda_and_unknown_precisions_are_refused():
    with pytest.raises(ConfigError, match="train.precision=bf16 needs a CUDA device, and this run uses cpu"):
        device.check_precision("bf16", torch.device("cpu"))
    with pytest.raises(ConfigError, match="unknown train.precision 'fp64'"):
        device.check_precision("fp64", torch.device("cpu"))


def test_use_sets_the_current_device_only_inside_the_block():
    assert device.current() == torch.device("cpu") and device.precision() == "fp32"
    with device.use(torch.device("cpu"), "fp32"):
        assert device.autocast().__class__.__name__ == "nullcontext" and device.grad_scaler() is None
        assert device.peak_memory_bytes() is None
    with pytest.raises(ConfigError), device.use(torch.device("cpu"), "fp16"):
        pass
    assert device.precision() == "fp32"


def test_the_cli_refuses_a_missing_device_before_loading_anything(tmp_path, capsys):
    missing = f"cuda:{torch.cuda.device_count()}"
    assert main(["run", "--set", f"train.device={missing}", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert f"train.device={missing!r} is not available here" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_a_run_records_its_device_and_precision(tmp_path):
    out = tmp_path / "run"
    assert main(["run", "--set", "backbone.name=mlp", "--set", "data.train_per_task=100", "--set", "data.test_per_task=50",
                 "--set", "train.device=cpu", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["device"], metrics["precision"]) == ("cpu", "fp32") and "peak_gpu_memory_bytes" not in metrics
    assert "train:\n" in (out / "config.yaml").read_text() and "device: cpu" in (out / "config.yaml").read_text()
