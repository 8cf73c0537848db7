"""Tiny fake datasets on disk: a WILDS iWildCam v2.0 tree, ImageNet-LT list files and an image folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

SPLITS = ("train", "val", "test", "id_val", "id_test")


def _img(path: Path, rng: np.random.Generator, size=(32, 24), color=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    if color is not None:
        arr[:] = (np.asarray(color) * 0.7 + arr * 0.3).astype(np.uint8)
    Image.fromarray(arr).save(path, quality=90)


def make_fake_iwildcam(root: Path, per_split: dict[str, int] | None = None, n_classes: int = 3, seed: int = 0) -> Path:
    """Write `root/iwildcam_v2.0/` as WILDS expects it (metadata.csv, RELEASE_v2.0.txt, train/*.jpg)."""
    rng = np.random.default_rng(seed)
    per_split = per_split or {"train": 12, "val": 4, "test": 4, "id_val": 3, "id_test": 3}
    d = root / "iwildcam_v2.0"
    (d / "train").mkdir(parents=True, exist_ok=True)
    (d / "RELEASE_v2.0.txt").write_text("fake\n")
    rows, i = [], 0
    for split, n in per_split.items():
        for k in range(n):
            y = k % n_classes
            name = f"{split}_{k:04d}.jpg"
            _img(d / "train" / name, rng, color=[(200, 60, 60), (60, 200, 60), (60, 60, 200)][y % 3])
            rows.append(
                {
                    "split": split,
                    "filename": name,
                    "y": y,
                    "location_remapped": i % 2,
                    "sequence_remapped": i,
                    "datetime": f"2013-06-{(i % 28) + 1:02d} 12:00:00.000",
                }
            )
            i += 1
    pd.DataFrame(rows).to_csv(d / "metadata.csv", index=False)
    return root


def make_fake_imagenet_lt(root: Path, counts: dict[int, int], seed: int = 0) -> Path:
    """Write images and `ImageNet_LT_train.txt` with `counts[label]` images per class; return the list file."""
    rng = np.random.default_rng(seed)
    lines = []
    for label, n in counts.items():
        for k in range(n):
            rel = f"train/n{label:08d}/n{label:08d}_{k}.JPEG"
            _img(root / rel, rng, size=(16, 16))
            lines.append(f"{rel} {label}")
    path = root / "ImageNet_LT_train.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def make_image_folder(root: Path, per_class: dict[str, int], seed: int = 0) -> Path:
    """Write `root/class_name/*.png`; return root."""
    rng = np.random.default_rng(seed)
    for cls, n in per_class.items():
        for k in range(n):
            _img(root / cls / f"{cls}_{k}.png", rng, size=(16, 16))
    return root


TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def register_tiny_open_clip(folder: Path, name: str = "tiny-clip-test") -> str:
    """Register a tiny open_clip architecture (JSON config) and return its name."""
    import json

    import open_clip

    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(folder)
    return name


def make_synthetic_manifest(
    out: Path, table: pd.DataFrame, strengths=(0.5, 0.3, 0.1), seeds=(1, 2), seed: int = 0, keep_every: int = 1
) -> Path:
    """Write perturbed copies of the table's images in gene_img's layout plus a scored manifest; return it."""
    rng = np.random.default_rng(seed)
    rows = []
    for r in table.itertuples():
        src = np.asarray(Image.open(r.source_path).convert("RGB"), dtype=np.float64)
        for s in strengths:
            for sd in seeds:
                rel = f"{r.label_name}/Strength{int(round(100 * s))}_guidance100_seed{sd}/{r.sample_id}.jpg"
                noisy = (1 - s) * src + s * rng.integers(0, 255, src.shape)
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(out / rel)
                rows.append(
                    {
                        "synthetic_id": f"{r.sample_id}/Strength{int(round(100 * s))}_guidance100_seed{sd}",
                        "sample_id": r.sample_id,
                        "label": int(r.label),
                        "label_name": r.label_name,
                        "prompt": f"a photo of {r.label_name}.",
                        "strength": s,
                        "image_guidance": 1 - s,
                        "text_guidance": 10.0,
                        "seed": sd,
                        "model_id": "fake",
                        "steps": 10,
                        "width": src.shape[1],
                        "height": src.shape[0],
                        "path": rel,
                        "filepath": r.filepath,
                        "clip_img_sim": 0.9,
                        "clip_txt_sim": 0.3,
                        "keep": len(rows) % keep_every == 0,
                    }
                )
    path = out / "scores.parquet"
    pd.DataFrame(rows).to_parquet(path)
    return path


def save_fitted_classifier(
    table: pd.DataFrame, path: Path, arch: str = "test_resnet", n_classes: int | None = None, seed: int = 0
) -> Path:
    """Save (safetensors) a tiny timm classifier whose head is fitted to predict every `table` label; return path.

    The body is random; the linear head is the least-squares fit (pseudo-inverse) of one-hot targets on the
    body's features of the table's images, through the eval transform the checkpoint scorer uses. The fit is
    checked: the saved model classifies every sample of `table` correctly.
    """
    import torch
    from safetensors.torch import save_file

    from curriculum.weights_io import create_timm_classifier
    from data_generation.mining.difficulty import SampleImages

    torch.manual_seed(seed)
    labels = torch.tensor(table["label"].to_numpy(), dtype=torch.long)
    n_classes = n_classes or int(labels.max()) + 1
    model, _, transform = create_timm_classifier(arch, n_classes)
    images = SampleImages(table, transform)
    x = torch.stack([images[i] for i in range(len(images))])
    with torch.no_grad():
        feats = model.forward_head(model.forward_features(x), pre_logits=True).double()
        feats = torch.cat([feats, torch.ones(len(feats), 1, dtype=torch.float64)], dim=1)
        target = 10.0 * torch.nn.functional.one_hot(labels, n_classes).double() - 5.0
        w = torch.linalg.pinv(feats) @ target
        head = model.get_classifier()
        head.weight.copy_(w[:-1].T.float())
        head.bias.copy_(w[-1].float())
        assert bool((model(x).argmax(dim=1) == labels).all()), "the fitted head does not separate the samples"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path
