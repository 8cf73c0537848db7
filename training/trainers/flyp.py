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
    import open_clip

    try:
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
        self.rank, self.world_size = 0, 1

    def set_process(self, rank: int, world_size: int) -> None:
        """Train as process `rank` of `world_size`: features are gathered across processes, so the contrastive
        batch is the global batch, and templates are drawn for the global batch (this process takes its slice)."""
        self.rank, self.world_size = rank, world_size

    def set_epoch(self, epoch: int) -> None:
        """Reseed the template choice for `epoch`, so a resumed run picks the same prompts."""
        self._rng = np.random.default_rng([self.seed, epoch])

    def _texts(self, labels: torch.Tensor) -> list[str]:
        # one draw per item of the GLOBAL batch on every process (the same stream), this process's slice of it:
        # the prompts are those of one process training the global batch
        n = len(labels)
        picks = self._rng.integers(0, len(self.templates), size=n * self.world_size)
        picks = picks[self.rank * n : (self.rank + 1) * n]
        return [self.templates[t].format(name=self.class_names[int(y)]) for t, y in zip(picks, labels.tolist())]

    def training_loss(self, model, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Return the contrastive loss between the images and a class prompt (random template) each.

        One call of the model's forward (open_clip: image and text features and the exp'ed logit scale), so
        a DistributedDataParallel wrapper, which exposes only forward, trains and synchronises it. Under several
        processes every process's features join the logits (gathered with their gradients), so the negatives
        are the whole global batch, as in one process (the reference's DataParallel).
        """
        tokens = self.tokenizer(self._texts(labels)).to(images.device)
        out = model(images, tokens)
        if isinstance(out, dict):
            image_emb, text_emb, scale = out["image_features"], out["text_features"], out["logit_scale"]
        else:
            image_emb, text_emb, scale = out[0], out[1], out[2]
        return contrastive_loss(image_emb, text_emb, scale, rank=self.rank, world_size=self.world_size)

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
