"""probe backend: the offline stand-in for CLIP - a small image classifier with a cosine head.

Where no CLIP weights can be had (the offline demo, tests), CLIPScore filtering still needs an
independently trained judge of "does this synthetic image still look like its source, and like its class?".
A probe is a timm backbone whose pooled features f(x) are L2-normalised and compared with learnt, normalised
class vectors w_c, as CLIP's zero-shot classifier compares image and text embeddings:

    p(c | x) = softmax_c( s * cos(f(x), w_c) )          s = the folder's logit scale

* image-image similarity (`clip_img_sim`): cos(f(x_syn), f(x_real)), the dot product of `embed_images`;
* image-text similarity (`clip_txt_sim`): p(c | x_syn) where c is the class the prompt names
  (`text_similarity`); `embed_texts` maps a prompt to w_c by finding the class name in it.

So `--threshold` is a probability here (e.g. 0.5), not a CLIP cosine. A probe folder holds
`probe_config.json` (architecture, class names, logit scale, image size, normalisation) and
`model.safetensors`; `train_probe` makes one from a sample table, `ProbeScorer.from_pretrained` loads it.

    python data_generation/train_probe.py --data samples.csv --split pool --out runs/probe --img_size 16
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from curriculum.contracts import CLIP_IMG_SIM, CLIP_TXT_SIM
from curriculum.tables import atomic_path, write_json
from data_generation.scoring.backends.base import (
    SCORERS,
    ScorerLoadError,
    TorchScorerMixin,
    file_signature,
    l2_normalise,
)

FORMAT = "discl-probe/1"
CONFIG = "probe_config.json"
WEIGHTS = "model.safetensors"


class CosineProbe(torch.nn.Module):
    """A timm backbone (no head) and normalised class vectors: `forward` returns s * cos(f(x), w_c) logits."""

    def __init__(self, arch: str, num_classes: int, logit_scale: float = 16.0):
        super().__init__()
        import timm

        self.backbone = timm.create_model(arch, pretrained=False, num_classes=0)
        self.class_vectors = torch.nn.Parameter(torch.randn(num_classes, self.backbone.num_features) * 0.02)
        self.logit_scale = float(logit_scale)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Return the L2-normalised pooled features (N, D)."""
        return F.normalize(self.backbone(x), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return (N, K) logits s * cos(f(x), w_c)."""
        return self.logit_scale * self.features(x) @ F.normalize(self.class_vectors, dim=-1).T


@dataclass(frozen=True)
class ProbeConfig:
    """What a probe folder records besides its weights."""

    arch: str
    class_names: tuple[str, ...]
    img_size: int
    logit_scale: float = 16.0
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def to_json(self) -> dict:
        """Return the JSON form written to probe_config.json."""
        return {
            "format": FORMAT,
            "arch": self.arch,
            "class_names": list(self.class_names),
            "img_size": self.img_size,
            "logit_scale": self.logit_scale,
            "mean": list(self.mean),
            "std": list(self.std),
        }


def _transform(cfg: ProbeConfig):
    """Return the probe's preprocessing: RGB, bicubic resize to img_size², normalise with its mean/std."""
    from torchvision import transforms as T

    return T.Compose(
        [
            T.Lambda(lambda im: im.convert("RGB")),
            T.Resize((cfg.img_size, cfg.img_size), interpolation=T.InterpolationMode.BICUBIC),
            T.ToTensor(),
            T.Normalize(cfg.mean, cfg.std),
        ]
    )


def save_probe(model: CosineProbe, cfg: ProbeConfig, folder: str | Path) -> Path:
    """Write `model` and `cfg` to `folder` (safetensors + JSON, atomically); return the folder."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(folder / WEIGHTS) as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT})
    write_json(cfg.to_json(), folder / CONFIG)
    return folder


def load_probe(folder: str | Path) -> tuple[CosineProbe, ProbeConfig]:
    """Return the (eval-mode model, config) of a probe folder; ScorerLoadError naming the file otherwise."""
    from safetensors.torch import load_file

    folder = Path(folder)
    cfg_path = folder / CONFIG
    if not cfg_path.is_file() or not (folder / WEIGHTS).is_file():
        raise ScorerLoadError(
            f"--clip_model {folder}: not a probe folder (needs {CONFIG} and {WEIGHTS}); "
            "make one with `python data_generation/train_probe.py --data TABLE --out DIR`"
        )
    raw = json.loads(cfg_path.read_text())
    if raw.get("format") != FORMAT:
        raise ScorerLoadError(f"{cfg_path}: unknown format {raw.get('format')!r}, expected {FORMAT!r}")
    cfg = ProbeConfig(
        arch=raw["arch"],
        class_names=tuple(raw["class_names"]),
        img_size=int(raw["img_size"]),
        logit_scale=float(raw["logit_scale"]),
        mean=tuple(raw["mean"]),
        std=tuple(raw["std"]),
    )
    model = CosineProbe(cfg.arch, len(cfg.class_names), cfg.logit_scale)
    try:
        model.load_state_dict(load_file(str(folder / WEIGHTS)))
    except RuntimeError as err:
        raise ScorerLoadError(
            f"{folder / WEIGHTS} does not fit {cfg.arch} with {len(cfg.class_names)} classes: {err}"
        ) from err
    return model.eval(), cfg


def _load_table_images(table: str | Path, split: str | None, data_root: str | Path | None):
    """Return (PIL images, labels, class names by label) of a sample table's rows (optionally one split)."""
    from curriculum.tables import read_sample_table, select_split

    df = select_split(
        read_sample_table(table, data_root if data_root is not None else Path(table).parent), split, table
    )
    from curriculum.images import load_rgb

    images = [load_rgb(path) for path in df["source_path"]]  # a missing/unreadable file: an error naming it
    names = df.groupby("label")["label_name"].first().to_dict()
    return images, df["label"].astype(int).to_numpy(), {int(k): str(v) for k, v in names.items()}


def train_probe(
    table: str | Path,
    out: str | Path,
    split: str | None = None,
    data_root: str | Path | None = None,
    arch: str = "test_efficientnet",
    img_size: int = 16,
    epochs: int = 30,
    batch_size: int = 64,
    lr: float = 3e-3,
    logit_scale: float = 16.0,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Train a probe on the table's rows (one `split` if given), save it to `out`; return its training summary.

    Plain supervised cross-entropy on the cosine logits with AdamW and a cosine learning-rate decay, light
    augmentation (random shifts of up to 1/8 of the side; no flips, which would turn digits and text into
    other classes). The summary holds the final training accuracy and loss, the epochs and the seconds.
    """
    import time

    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    images, labels, names = _load_table_images(table, split, data_root)
    k = max(names) + 1
    class_names = tuple(names.get(c, str(c)) for c in range(k))
    cfg = ProbeConfig(arch=arch, class_names=class_names, img_size=img_size, logit_scale=logit_scale)
    tf = _transform(cfg)
    x = torch.stack([tf(im) for im in images])
    y = torch.tensor(np.array(labels), dtype=torch.long)
    torch.manual_seed(seed)
    model = CosineProbe(arch, k, logit_scale)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * math.ceil(len(y) / batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps))
    gen = torch.Generator().manual_seed(seed)
    shift = max(1, img_size // 8)
    model.train()
    loss_v = float("nan")
    for _ in tqdm(range(epochs), desc="train probe", unit="epoch", disable=not progress):
        order = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), batch_size):
            idx = order[i : i + batch_size]
            dx, dy = (int(v) for v in torch.randint(-shift, shift + 1, (2,), generator=gen))
            xb = torch.roll(x[idx], shifts=(dy, dx), dims=(2, 3))  # the background is uniform: a roll is a shift
            loss = F.cross_entropy(model(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_v = float(loss.detach())
    model.eval()
    with torch.no_grad():
        acc = float((model(x).argmax(1) == y).float().mean())
    save_probe(model, cfg, out)
    summary = {
        "train_accuracy": acc,
        "final_loss": loss_v,
        "epochs": epochs,
        "n_images": int(len(y)),
        "arch": arch,
        "img_size": img_size,
        "seconds": time.perf_counter() - t0,
        "table": str(table),
        "split": split,
    }
    write_json(summary, Path(out) / "train_summary.json")
    return summary


def _name_pattern(name: str) -> re.Pattern:
    words = [re.escape(w) for w in re.split(r"[\s_]+", name.strip().lower()) if w]
    return re.compile(r"(?<![a-z0-9])" + r"[\s_]+".join(words) + r"(?![a-z0-9])")


@SCORERS.register("probe")
class ProbeScorer(TorchScorerMixin):
    """CLIPScore with a probe folder: image embeddings = normalised features, a prompt's embedding = the
    normalised vector of the class it names, image-text similarity = the probe's probability of that class."""

    backend = "probe"

    def __init__(self, model: CosineProbe, cfg: ProbeConfig, model_id: str, device: str = "cpu"):
        self.model = model.to(device).eval()
        self.cfg = cfg
        self.model_id = model_id
        self.device = torch.device(device)
        self._tf = _transform(cfg)
        self._patterns = [(c, _name_pattern(n)) for c, n in enumerate(cfg.class_names)]
        with torch.no_grad():
            self._class_vectors = F.normalize(model.class_vectors.detach().float(), dim=-1).cpu().numpy()
        self.embed_dim = int(self._class_vectors.shape[1])

    @classmethod
    def from_pretrained(
        cls, model_id: str, pretrained: str | None = None, device: str = "cpu", dtype: str | None = None
    ) -> ProbeScorer:
        """Return the scorer of the probe folder `model_id` on `device` (always fp32; `pretrained` is unused)."""
        if pretrained not in (None, "", "none"):
            raise ScorerLoadError(
                f"--clip_pretrained {pretrained!r}: the probe backend reads its weights from "
                f"the --clip_model folder; leave --clip_pretrained unset"
            )
        model, cfg = load_probe(model_id)
        return cls(model, cfg, model_id=str(model_id), device=device)

    def describe(self) -> dict:
        """Return backend, folder, weights signature, what the similarities mean, and the preprocessing."""
        return {
            "backend": self.backend,
            "model_id": self.model_id,
            "arch": self.cfg.arch,
            "dtype": "float32",
            "embed_dim": self.embed_dim,
            "class_names": list(self.cfg.class_names),
            "weights_signature": file_signature(self.model_id),
            "preprocessing": repr(self._tf),
            CLIP_IMG_SIM: "cosine of normalised probe features",
            CLIP_TXT_SIM: "probe probability of the prompt's class (softmax over s*cos(f, w_c))",
        }

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """Return the probe's transform of one image, (3, S, S)."""
        return self._tf(image)

    @torch.inference_mode()
    def embed_pixels(self, pixels: torch.Tensor) -> np.ndarray:
        """Return (N, D) normalised features of a preprocessed batch."""
        return l2_normalise(self.model.features(pixels.to(self.device)))

    def class_of(self, text: str) -> int:
        """Return the class whose name appears in `text` (the longest such name); ValueError if none does."""
        low = text.lower()
        hits = [(len(self.cfg.class_names[c]), c) for c, pat in self._patterns if pat.search(low)]
        if not hits:
            raise ValueError(f"prompt {text!r} names none of the probe's classes {list(self.cfg.class_names)}")
        return max(hits)[1]

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Return (N, D) normalised class vectors of the classes the texts name."""
        if not texts:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        return self._class_vectors[[self.class_of(t) for t in texts]].astype(np.float32)

    def text_similarity(self, image_emb: np.ndarray, text_emb: np.ndarray) -> np.ndarray:
        """Return, per row, p(c | image) for the class c whose vector `text_emb` is (NaN rows stay NaN)."""
        image_emb = np.asarray(image_emb, dtype=np.float64)
        text_emb = np.asarray(text_emb, dtype=np.float64)
        out = np.full(len(image_emb), np.nan)
        ok = np.isfinite(image_emb).all(axis=1) & np.isfinite(text_emb).all(axis=1)  # unscorable rows stay NaN
        if ok.any():
            vectors = self._class_vectors.astype(np.float64)
            cls = np.argmax(text_emb[ok] @ vectors.T, axis=1)
            logits = self.cfg.logit_scale * image_emb[ok] @ vectors.T
            probs = np.exp(logits - logits.max(axis=1, keepdims=True))
            probs /= probs.sum(axis=1, keepdims=True)
            out[ok] = probs[np.arange(len(cls)), cls]
        return out
