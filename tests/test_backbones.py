"""Backbones beyond the reduced ResNet-18: the separable CNN, EfficientNet-Lite0 with its real
ImageNet weights, the ViT, and loading checkpoints into them (``backbone.pretrained``)."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file
from torch import nn

from pearl_cl.backbones import adaptable_layers, build_backbone, norm_layers
from pearl_cl.backbones.pretrained import imagenet_weights_file, load_pretrained, rename_efficientnet_keys
from pearl_cl.backbones.timm_models import vit_patch_size
from pearl_cl.commands.cli import main
from pearl_cl.errors import ConfigError

MILITARY_UNIFORM = 652  # ImageNet class of the photograph of Grace Hopper in uniform


@pytest.mark.parametrize("name, features", [("separable-cnn", 256), ("efficientnet-lite0", 1280), ("vit-tiny", 96)])
def test_backbones_map_images_to_feature_dim(name, features):
    net = build_backbone(name, (1, 28, 28), width=0.5)
    assert net.feature_dim == features
    assert net(torch.randn(3, 1, 28, 28)).shape == (3, features)


def test_separable_cnn_adapts_stem_and_pointwise_convs_not_depthwise():
    net = build_backbone("separable-cnn", (3, 32, 32), width=0.5)
    layers = adaptable_layers(net)
    assert list(layers) == ["stem.0"] + [f"blocks.{i}.pw.0" for i in range(6)]
    depthwise = [m for n, m in net.named_modules() if n.endswith("dw.0")]
    assert len(depthwise) == 6 and all(m.groups == m.in_channels > 1 for m in depthwise)
    assert len(norm_layers(net)) == 13


def test_efficientnet_adapts_stem_pointwise_and_head_convs():
    layers = adaptable_layers(build_backbone("efficientnet-lite0", (3, 32, 32)))
    kernels = {name: module.kernel_size for name, module in layers.items()}
    assert kernels.pop("conv_stem") == (3, 3)
    assert set(kernels.values()) == {(1, 1)} and "conv_head" in kernels
    assert len(kernels) == 1 + 2 * 15 + 1  # first block's pointwise, two per later block, head


def test_imagenet_weights_classify_a_real_photograph():
    """The package's weights, renamed into timm's network, recognise a real photo (matplotlib's
    sample image of Grace Hopper in uniform): the weights and the renaming are right."""
    net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    load_pretrained(net, "imagenet", "efficientnet-lite0")
    photo = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    pixels = np.asarray(Image.open(photo).convert("RGB").resize((224, 224)), dtype=np.float32) / 255.0
    x = (torch.from_numpy(pixels).permute(2, 0, 1)[None] - 0.5) / 0.5  # the Lite models' normalisation
    net.eval()
    with torch.no_grad():
        assert int(net(x).argmax()) == MILITARY_UNIFORM


def test_imagenet_weights_fold_rgb_stem_into_grey():
    package = torch.load(imagenet_weights_file(), map_location="cpu", weights_only=True)
    net = build_backbone("efficientnet-lite0", (1, 28, 28), pretrained="imagenet")
    assert torch.allclose(net.conv_stem.weight, package["_conv_stem.weight"].sum(1, keepdim=True))
    assert torch.equal(net.blocks[5][3].conv_pwl.weight, package["_blocks.14._project_conv.weight"])
    assert set(rename_efficientnet_keys(package)) == set(timm.create_model("tf_efficientnet_lite0").state_dict())


def test_vit_patch_size_rule():
    assert [vit_patch_size(s) for s in (28, 32, 64, 224)] == [4, 4, 8, 16]
    with pytest.raises(ConfigError, match="at least 14"):
        vit_patch_size(13)


@pytest.fixture(scope="module")
def vit_checkpoint(tmp_path_factory) -> tuple[Path, nn.Module]:
    """A timm ViT-Tiny (patch 16, 224 pixels, RGB, 1000 classes) saved as safetensors."""
    torch.manual_seed(0)
    source = timm.create_model("vit_tiny_patch16_224", pretrained=False)
    path = tmp_path_factory.mktemp("ckpt") / "vit_tiny.safetensors"
    save_file(source.state_dict(), str(path))
    return path, source


def test_vit_loads_a_timm_checkpoint_resampled_to_small_grey_images(vit_checkpoint):
    path, source = vit_checkpoint
    net = build_backbone("vit-tiny", (1, 28, 28), width=1.0, pretrained=str(path))
    assert torch.equal(net.blocks[7].attn.qkv.weight, source.blocks[7].attn.qkv.weight)
    assert net.pos_embed.shape == (1, 1 + 7 * 7, 192) and net.patch_embed.proj.weight.shape == (192, 1, 4, 4)
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 192)


def test_vit_checkpoint_of_another_width_is_a_clear_error(vit_checkpoint):
    with pytest.raises(ConfigError, match=r"cls_token \(1, 1, 192\) vs \(1, 1, 96\).*backbone.width=1"):
        build_backbone("vit-tiny", (1, 28, 28), width=0.5, pretrained=str(vit_checkpoint[0]))


def test_checkpoint_with_foreign_or_missing_keys_is_a_clear_error(tmp_path):
    net = build_backbone("resnet18", (1, 28, 28), width=0.25)
    state = net.state_dict()
    state["extra.weight"] = torch.zeros(2)
    del state["layer1.0.conv1.weight"]
    torch.save({"state_dict": state}, tmp_path / "bad.pth")
    with pytest.raises(ConfigError, match=r"missing \(1\): layer1.0.conv1.weight; unexpected \(1\): extra.weight"):
        load_pretrained(build_backbone("resnet18", (1, 28, 28), width=0.25), str(tmp_path / "bad.pth"), "resnet18")


def test_checkpoint_round_trip_for_our_own_backbone(tmp_path):
    net = build_backbone("separable-cnn", (1, 28, 28), width=0.25)
    torch.save({"model": net.state_dict()}, tmp_path / "sep.pt")
    loaded = build_backbone("separable-cnn", (1, 28, 28), width=0.25, pretrained=str(tmp_path / "sep.pt"))
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), loaded.state_dict().values()))


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["--pretrained", "{tmp}/missing.pth"], "missing.pth is not a file"),
    (["--pretrained", "{tmp}/notes.txt"], "has suffix '.txt'"),
    (["--pretrained", "{tmp}/junk.pth"], "cannot read"),
    (["--pretrained", "imagenet"], "exists only for efficientnet-lite0"),
])
def test_bad_pretrained_exits_2_before_writing(tmp_path, capsys, args, message):
    (tmp_path / "notes.txt").write_text("not weights")
    (tmp_path / "junk.pth").write_bytes(b"not a pickle")
    out = tmp_path / "run"
    code = main(["run", "--out", str(out), "--set", "backbone.name=mlp", "--set", "data.train_per_task=50"]
                + [a.format(tmp=tmp_path) for a in args])
    assert code == 2 and message in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.slow
def test_run_keeps_the_checkpoint_path_absolute_and_needs_it_only_to_learn(tmp_path, monkeypatch):
    import yaml

    from pearl_cl.engine.operations import rollback

    net = build_backbone("mlp", (1, 28, 28), width=0.25)
    torch.save(net.state_dict(), tmp_path / "mlp.pth")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    assert main(["run", "--out", str(out), "--pretrained", "mlp.pth", "--set", "backbone.name=mlp", "--set",
                 "backbone.width=0.25", "--set", "data.train_per_task=100", "--set", "data.test_per_task=50"]) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())["backbone"]["pretrained"]
    assert saved == str(tmp_path / "mlp.pth")
    (tmp_path / "mlp.pth").unlink()
    assert [r.task for r in rollback(out, 2).records] == ["task1", "task2"]  # no learning: the checkpoint is not read
