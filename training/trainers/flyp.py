"""FLYP: fine-tune CLIP like it was pretrained — contrastive loss between images and their class prompts,
evaluation with a zero-shot head built from the same templates (Goyal et al., 2023)."""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from training.trainers.losses import contrastive_loss
from training.trainers.metrics import accuracy_and_macro_f1

ACTIVATIONS = ("auto", "quickgelu", "gelu")


def clip_activation(model_name: str, pretrained: str | None, activation: str = "auto") -> tuple[bool, str]:
    """Return (QuickGELU?, the rule that decided) for building `model_name` to hold the `pretrained` weights.

    OpenAI's CLIP weights were trained with QuickGELU; open_clip's plain `ViT-B-16` config uses GELU and only
    warns when given them (a local file gets no warning at all). `activation` "quickgelu"/"gelu" decides;
    "auto": an architecture named `*-quickgelu` -> QuickGELU; a pretrained tag -> what open_clip's registry
    records for it (`openai` -> QuickGELU); a local file -> the `quick_gelu` of an `open_clip_config.json`
    beside it (the hub's open_clip layout), QuickGELU for a TorchScript archive (OpenAI's own release format),
    else an error asking for --activation; no weights -> the architecture's own activation.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"--activation must be one of {ACTIVATIONS}, got {activation!r}")
    if activation != "auto":
        return activation == "quickgelu", f"--activation {activation}"
    if model_name.endswith("-quickgelu"):
        return True, f"the architecture {model_name!r} is a -quickgelu config"
    if not pretrained:
        return False, "no pretrained weights: the architecture's own activation"
    path = Path(str(pretrained))
    if path.is_file():
        beside = path.parent / "open_clip_config.json"
        if beside.is_file():
            model_cfg = json.loads(beside.read_text()).get("model_cfg", {})
            quick = bool(model_cfg.get("quick_gelu", False))
            return quick, f"{beside} says quick_gelu={str(quick).lower()}"
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                if any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist()):
                    return True, f"{path} is a TorchScript archive (OpenAI's CLIP release format, QuickGELU)"
        raise ValueError(
            f"--pretrained {path}: cannot tell which activation these weights were trained with (no "
            "open_clip_config.json beside the file); pass --activation quickgelu (OpenAI's CLIP weights, the "
            "reference's) or --activation gelu (e.g. LAION's)"
        )
    import open_clip

    cfg = open_clip.get_pretrained_cfg(model_name, str(pretrained))
    if cfg:
        quick = bool(cfg.get("quick_gelu", False))
        act = "QuickGELU" if quick else "GELU"
        return quick, f"open_clip's registry: {model_name}/{pretrained} was trained with {act}"
    return False, f"{model_name}/{pretrained} is not in open_clip's registry: the architecture's own activation"


def load_open_clip(model_name: str, pretrained: str | None, device: str = "cpu", quick_gelu: bool = False):
    """Return (model, train transform, eval transform, tokenizer) from open_clip.

    `pretrained` is an open_clip tag (e.g. 'openai', needs the hub or its cache) or a local weights file;
    `quick_gelu` builds the towers with QuickGELU (open_clip's `force_quick_gelu`; see `clip_activation`).
    A weight that cannot be reached fails with a message naming --pretrained.
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
                model_name, pretrained=pretrained, device=device, force_quick_gelu=quick_gelu
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

    #: the engine passes each batch's item rows (their `template` column names the caption template)
    uses_item_rows = True

    def _texts(self, labels: torch.Tensor, rows=None) -> list[str]:
        if rows is not None and "template" in rows.columns:
            picks = rows["template"].to_numpy(dtype=np.int64)  # one training row per (image, template)
        else:
            # one draw per item of the GLOBAL batch on every process (the same stream), this process's slice of
            # it: the prompts are those of one process training the global batch
            n = len(labels)
            picks = self._rng.integers(0, len(self.templates), size=n * self.world_size)
            picks = picks[self.rank * n : (self.rank + 1) * n]
        return [self.templates[t].format(name=self.class_names[int(y)]) for t, y in zip(picks, labels.tolist())]

    def training_loss(self, model, images: torch.Tensor, labels: torch.Tensor, rows=None) -> torch.Tensor:
        """Return the contrastive loss between the images and a class prompt each: the template of the item's
        row (`rows["template"]`, DisCL's one row per caption) or, without it, a seeded random template.

        One call of the model's forward (open_clip: image and text features and the exp'ed logit scale), so
        a DistributedDataParallel wrapper, which exposes only forward, trains and synchronises it. Under several
        processes every process's features join the logits (gathered with their gradients), so the negatives
        are the whole global batch, as in one process (the reference's DataParallel).
        """
        tokens = self.tokenizer(self._texts(labels, rows)).to(images.device)
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
