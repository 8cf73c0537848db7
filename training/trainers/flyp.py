"""FLYP: fine-tune CLIP like it was pretrained — contrastive loss between images and their class prompts,
evaluation with a zero-shot head built from the same templates (Goyal et al., 2023)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from training.trainers.losses import contrastive_loss
from training.trainers.metrics import accuracy_and_macro_f1


def load_open_clip(model_name: str, pretrained: str | None, device: str = "cpu"):
    """Return (model, train transform, eval transform, tokenizer) from open_clip.

    `pretrained` is an open_clip tag (e.g. 'openai', needs the hub or its cache) or a local weights file;
    a weight that cannot be reached fails with a message naming --pretrained.
    """
    from curriculum.offline import HOW, OPEN_CLIP_HUB, open_clip_hub_repo, open_clip_tag_missing, quiet_hub

    def check_tag() -> None:  # before open_clip's download: no retry storm
        missing = open_clip_tag_missing(model_name, pretrained)
        if missing:
            raise RuntimeError(
                f"--model {model_name} --pretrained {pretrained}: open_clip weights: {missing}; {HOW} "
                f"(`hf download {open_clip_hub_repo(model_name, pretrained)} --local-dir DIR`, then "
                "--model local-dir:DIR)"
            )

    known = (model_name, pretrained) in OPEN_CLIP_HUB
    if known:
        check_tag()  # DisCL's default answers before open_clip (several CPU-seconds) is imported
    import open_clip

    is_tag = pretrained and not os.path.exists(str(pretrained)) and not str(model_name).startswith("local-dir:")
    if not known and is_tag and pretrained in open_clip.list_pretrained_tags_by_model(model_name):
        check_tag()
    try:
        with quiet_hub():
            model, train_tf, eval_tf = open_clip.create_model_and_transforms(
                model_name, pretrained=pretrained, device=device
            )
    except Exception as err:
        where = "the local file" if pretrained and os.path.exists(str(pretrained)) else "the model hub (offline?)"
        raise RuntimeError(
            f"cannot create open_clip model {model_name!r} with pretrained={pretrained!r} from {where}: {err}. "
            "Pass --pretrained /path/to/weights.safetensors (or .bin) downloaded where the hub is reachable."
        ) from err
    return model, train_tf, eval_tf, open_clip.get_tokenizer(model_name)


class FLYPTask:
    """The FLYP objective and zero-shot evaluation for a CLIP model (open_clip interface)."""

    def __init__(
        self,
        model,
        train_transform,
        eval_transform,
        tokenizer,
        class_names: Sequence[str],
        templates: Sequence[str],
        name: str = "iwildcam",
        seed: int = 0,
    ):
        self.model, self.train_transform, self.eval_transform = model, train_transform, eval_transform
        self.tokenizer = tokenizer
        self.class_names = list(class_names)
        self.templates = list(templates)
        self.name = name
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._head: torch.Tensor | None = None

    def set_epoch(self, epoch: int) -> None:
        """Reseed the template choice for `epoch`, so a resumed run picks the same prompts."""
        self._rng = np.random.default_rng([self.seed, epoch])

    def _texts(self, labels: torch.Tensor) -> list[str]:
        picks = self._rng.integers(0, len(self.templates), size=len(labels))
        return [self.templates[t].format(name=self.class_names[int(y)]) for t, y in zip(picks, labels.tolist())]

    def training_loss(self, model, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Return the contrastive loss between the images and a class prompt (random template) each.

        One call of the model's forward (open_clip: image and text features and the exp'ed logit scale), so
        a DistributedDataParallel wrapper, which exposes only forward, trains and synchronises it.
        """
        tokens = self.tokenizer(self._texts(labels)).to(images.device)
        out = model(images, tokens)
        if isinstance(out, dict):
            image_emb, text_emb, scale = out["image_features"], out["text_features"], out["logit_scale"]
        else:
            image_emb, text_emb, scale = out[0], out[1], out[2]
        return contrastive_loss(image_emb, text_emb, scale)

    @torch.no_grad()
    def prepare_eval(self, model) -> None:
        """Build the zero-shot head: per class, the re-normalised mean of its template embeddings."""
        device = next(model.parameters()).device
        heads = []
        for name in self.class_names:
            tokens = self.tokenizer([t.format(name=name) for t in self.templates]).to(device)
            e = F.normalize(model.encode_text(tokens).float(), dim=-1).mean(0)
            heads.append(F.normalize(e, dim=0))
        self._head = torch.stack(heads)

    def class_logits(self, model, images: torch.Tensor) -> torch.Tensor:
        """Return zero-shot class logits (call `prepare_eval` after the weights change)."""
        if self._head is None:
            self.prepare_eval(model)
        emb = F.normalize(model.encode_image(images).float(), dim=-1)
        return model.logit_scale.exp().float() * emb @ self._head.to(emb.device).t()

    def split_metrics(self, split: str, y_pred: np.ndarray, y_true: np.ndarray) -> dict[str, float]:
        """Return `{name}/{split}/acc` and `/macro_f1` (WILDS' metric classes)."""
        return {f"{self.name}/{split}/{k}": v for k, v in accuracy_and_macro_f1(y_pred, y_true).items()}
