"""Mining throughput: difficulty scoring with real-size models, and end-to-end mining at 100k samples.

    python benchmarks/bench_mining.py                 # 64 images per scorer, 100,000 samples end to end
    python benchmarks/bench_mining.py --images 256 --n 1000000 --device cuda

* DINO ViT-S/16 (timm `vit_small_patch16_224.dino`, random weights: the same compute as the real one) at
  224 px through `curriculum.PretrainedModelExtractor` — the prototype scorer's feature pass;
* CLIP ViT-B-32 (open_clip, random weights) zero-shot probabilities over 10 classes — `zero_shot_clip`;
* end to end with precomputed features (384-d) and classifier probabilities: k-means prototypes, classifier
  scores, join by sample_id, the rule, and the written outputs (hard CSV + Parquet of every sample).
Prints a table.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks.machine import check_device, progress, records, set_threads  # noqa: E402
from curriculum import PretrainedModelExtractor, fit_prototypes  # noqa: E402
from data_generation.mining.difficulty import SampleImages, classifier_scores, zero_shot_probs  # noqa: E402
from data_generation.mining.rules import HardRule, join_scores, select_hard, write_mining_outputs  # noqa: E402


def make_images(folder: Path, n: int) -> pd.DataFrame:
    """Write n random 256x256 JPEGs and return their sample table."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        p = folder / f"img{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(p)
        rows.append(
            {
                "sample_id": f"img{i}",
                "filepath": str(p),
                "label": i % 10,
                "label_name": f"c{i % 10}",
                "source_path": str(p),
            }
        )
    return pd.DataFrame(rows)


def bench_dino(table: pd.DataFrame, device: str, batch: int) -> float:
    """Return images/s of DINO ViT-S/16 feature extraction (decode + transform + forward)."""
    import timm
    from timm.data import create_transform, resolve_data_config

    model = timm.create_model("vit_small_patch16_224.dino", pretrained=False, num_classes=0).eval()
    tf = create_transform(**resolve_data_config({}, model=model))
    ext = PretrainedModelExtractor(model)
    ext.extract(SampleImages(table.iloc[:batch], tf), device=device, batch_size=batch)  # warm-up
    t0 = time.perf_counter()
    feats, _ = ext.extract(SampleImages(table, tf), device=device, batch_size=batch)
    assert feats.shape == (len(table), 384)
    return len(table) / (time.perf_counter() - t0)


def bench_clip(table: pd.DataFrame, device: str, batch: int) -> float:
    """Return images/s of zero-shot CLIP ViT-B-32 probabilities (decode + preprocess + forward + head)."""
    from data_generation.scoring.backends import load_scorer

    scorer = load_scorer("open_clip", "ViT-B-32", pretrained="none", device=device)
    prompts = [[f"a photo of a c{c}."] for c in range(10)]
    zero_shot_probs(scorer, table.iloc[:batch], prompts, batch)  # warm-up
    t0 = time.perf_counter()
    probs = zero_shot_probs(scorer, table, prompts, batch)
    assert probs.shape == (len(table), 10)
    return len(table) / (time.perf_counter() - t0)


def bench_end_to_end(n: int, out: Path) -> dict[str, float]:
    """Return the seconds of each mining stage at n samples with precomputed features and probabilities."""
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(50, 384)).astype(np.float32)
    labels = rng.integers(0, 100, n)
    feats = centers[rng.integers(0, 50, n)] + 0.5 * rng.normal(size=(n, 384)).astype(np.float32)
    probs = rng.dirichlet(np.ones(100), size=n)
    ids = [f"s{i:07d}" for i in range(n)]
    table = pd.DataFrame(
        {
            "sample_id": ids,
            "filepath": [f"{i}.jpg" for i in ids],
            "label": labels,
            "label_name": [f"c{y}" for y in labels],
        }
    )
    times = {}
    t = time.perf_counter()
    protos = fit_prototypes(feats, n_clusters=None, seed=0)
    proto = pd.DataFrame(
        {"prototype_distance": protos.distances.astype(np.float64)}, index=pd.Index(ids, name="sample_id")
    )
    times["k-means prototypes (k by Davies-Bouldin)"] = time.perf_counter() - t
    t = time.perf_counter()
    cls = classifier_scores(probs, labels, index=ids)
    scored = join_scores(table, cls, proto)
    rule = HardRule(misclassified=True, top_q={"prototype_distance": 0.1})
    hard = select_hard(scored, rule)
    times["classifier scores + join + rule"] = time.perf_counter() - t
    t = time.perf_counter()
    write_mining_outputs(
        table, scored, hard, rule, out / "hard.csv", out / "scores.parquet", "canonical", {"bench": True}
    )
    times["write hard CSV + Parquet of all samples"] = time.perf_counter() - t
    times["total"] = sum(times.values())
    return times


@records("bench_mining")
def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks and print the table; return 0."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--n", type=int, default=100_000, help="samples for the end-to-end run")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = p.parse_args(argv)
    check_device("bench_mining", args.device)
    set_threads(args.threads or torch.get_num_threads())
    with tempfile.TemporaryDirectory() as tmp:
        progress(f"writing {args.images} images")
        table = make_images(Path(tmp), args.images)
        progress("DINO ViT-S/16 features ...")
        dino = bench_dino(table, args.device, args.batch_size)
        progress(f"  {dino:.1f} samples/s; CLIP ViT-B-32 zero-shot ...")
        clip = bench_clip(table, args.device, args.batch_size)
        progress(f"  {clip:.1f} samples/s; end-to-end mining at {args.n:,} samples ...")
        e2e = bench_end_to_end(args.n, Path(tmp))
    print(
        f"\ndevice {args.device}, torch threads {torch.get_num_threads()}, {args.images} images of 256x256 per scorer\n"
    )
    print("| scorer | samples/s |\n|---|---:|")
    print(f"| DINO ViT-S/16 features, 224 px (prototype scorer) | {dino:.1f} |")
    print(f"| CLIP ViT-B-32 zero-shot, 224 px (zero_shot_clip scorer) | {clip:.1f} |")
    print(f"\nend-to-end mining at {args.n:,} samples with precomputed 384-d features:\n")
    print("| stage | seconds |\n|---|---:|")
    for k, v in e2e.items():
        print(f"| {k} | {v:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
