"""The reference's long-tail model: a torchvision-style ResNet-10 (BasicBlock, [1, 1, 1, 1]) and the stage-1
checkpoint layouts it starts from (LDMLR's and OLTR's), with its ImageNet transforms."""

from __future__ import annotations

import logging
import os

import torch

from curriculum.weights_io import load_weights_file

log = logging.getLogger(__name__)

#: architectures built here (any other --arch name is a timm model)
TORCHVISION_ARCHS = ("resnet10",)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def resnet10(num_classes: int) -> torch.nn.Module:
    """Return a torchvision ResNet with BasicBlock [1, 1, 1, 1] and a linear `fc` head (the reference's resnet10)."""
    from torchvision.models.resnet import BasicBlock, ResNet

    return ResNet(BasicBlock, [1, 1, 1, 1], num_classes=num_classes)


def read_lt_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Return the flat state dict (torchvision key names) of a ResNet checkpoint in one of the accepted layouts.

    Accepted (read by `curriculum.weights_io.load_weights_file`, never unpickling objects):
    - a flat state dict (`conv1.weight`, `bn1.*`, `layer1.0.conv1.weight`, ..., `fc.weight`, `fc.bias`), as a
      safetensors file or a torch file;
    - LDMLR's stage-1 checkpoint: `{"state_dict": {"model": <state dict>}, "model": <config>, ...}`;
    - OLTR's: `{"state_dict": {"feat_model": <body>, "classifier": <head with fc.*>}, ...}`;
    - `{"state_dict": <state dict>}` or `{"model": <state dict>}`.
    A `module.` prefix (DataParallel) is removed from every key.
    """
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--weights {path} does not exist")
    if path.endswith(".safetensors"):
        state = load_weights_file(path)
    else:
        try:
            state = load_weights_file(path)
        except Exception as err:
            raise ValueError(f"--weights {path}: not a tensor-only checkpoint ({err})") from err
        if not isinstance(state, dict):
            raise ValueError(f"--weights {path}: holds a {type(state).__name__}, not a checkpoint dict")
        if isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if isinstance(state.get("model"), dict) and all(torch.is_tensor(v) for v in state["model"].values()):
            state = state["model"]  # LDMLR
        elif isinstance(state.get("feat_model"), dict):  # OLTR: body and classifier saved apart
            state = {**state["feat_model"], **state.get("classifier", {})}
    out = {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in state.items() if torch.is_tensor(v)}
    if not out:
        raise ValueError(f"--weights {path}: no tensors found in the accepted layouts (see train_lt.py --help)")
    return out


def lt_transforms(img_size: int = 224, augment: str = "reference"):
    """Return (train, eval) transforms: the reference's RandomResizedCrop + flip + ColorJitter(0.4, 0.4, 0.4, 0)
    for training and Resize(256/224 x size) + CenterCrop(size) for evaluation, with ImageNet normalisation.
    `augment` "shift": a random translation of up to 1/8 before the eval transform; "none": the eval transform."""
    from torchvision import transforms as T

    norm = [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    eval_tf = T.Compose([T.Resize(int(round(img_size * 256 / 224))), T.CenterCrop(img_size), *norm])
    if augment == "none":
        return eval_tf, eval_tf
    if augment == "shift":
        return T.Compose([T.RandomAffine(degrees=0, translate=(0.125, 0.125)), eval_tf]), eval_tf
    train_tf = T.Compose(
        [T.RandomResizedCrop(img_size), T.RandomHorizontalFlip(), T.ColorJitter(0.4, 0.4, 0.4, 0), *norm]
    )
    return train_tf, eval_tf


def build_resnet10(num_classes: int, weights: str | None = None, img_size: int | None = None, augment="reference"):
    """Return (ResNet-10, train transform, eval transform), starting from `weights` when given.

    A head trained for another number of classes (a 1000-class stage-1 checkpoint on a subset) is
    re-initialised with a logged warning; any other key that does not fit is an error naming the file.
    """
    model = resnet10(num_classes)
    if weights:
        state = read_lt_checkpoint(weights)
        own = model.state_dict()
        head = {k for k in ("fc.weight", "fc.bias") if k in state and state[k].shape != own[k].shape}
        if head:
            log.warning(
                "%s: its head has %d classes, the model %d; the head is re-initialised at random",
                weights,
                state["fc.weight"].shape[0],
                num_classes,
            )
            state = {k: v for k, v in state.items() if k not in head}
        missing, unexpected = model.load_state_dict(state, strict=False)
        body_missing = [k for k in missing if not k.startswith("fc.")]
        bad = [k for k in state if k in own and state[k].shape != own[k].shape]
        if unexpected or body_missing or bad:
            raise ValueError(
                f"--weights {weights}: does not fit resnet10 (missing {body_missing[:5]}, unexpected "
                f"{unexpected[:5]}, wrong shape {bad[:5]})"
            )
    train_tf, eval_tf = lt_transforms(img_size or 224, augment)
    return model.eval(), train_tf, eval_tf
