"""inspect_scores.py: see what the CLIP filter kept, from comp_clip_scores's clip_scores.parquet.

    python data_generation/inspect_scores.py --scores runs/syn/clip_scores.parquet
    python data_generation/inspect_scores.py --scores runs/syn --plots_dir runs/syn/inspect --threshold 0.3

Prints kept/total per strength, per class and overall (the recorded `keep`, or `--threshold` /
`--img_threshold` applied again to the recorded similarities, without embedding anything), and with
`--plots_dir` writes the score distributions (clip_score_distributions.png) there.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    import _bootstrap  # type: ignore[import-not-found]

    _bootstrap.ensure_importable()

from curriculum.contracts import DISTRIBUTIONS_PLOT, KEEP, SCORES_FILE  # noqa: E402
from curriculum.tables import TableError, parse_bool_column, read_parquet_metadata, read_table  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of inspect_scores.py."""
    p = argparse.ArgumentParser(
        prog="inspect_scores.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--scores", required=True, help=f"{SCORES_FILE} (or the folder holding it)")
    p.add_argument("--threshold", type=float, default=None, help="re-apply keep = clip_txt_sim >= this")
    p.add_argument("--img_threshold", type=float, default=None, help="with --threshold: also clip_img_sim >= this")
    p.add_argument("--max_classes", type=int, default=20, help="classes shown (most rows first; default 20)")
    p.add_argument("--plots_dir", default=None, help=f"write {DISTRIBUTIONS_PLOT} here")
    return p


def main(argv: list[str] | None = None) -> int:
    """Print the kept/total report of a scores file; return 0, or 2 with one line naming the file or flag."""
    args = build_parser().parse_args(argv)
    from data_generation.scoring.report import format_summary, plot_distributions, summarize
    from data_generation.scoring.score import keep_mask

    path = Path(args.scores)
    if path.is_dir():
        path = path / SCORES_FILE
    try:
        scores = read_table(path)
        need = {"clip_txt_sim", "clip_img_sim", "keep", "score_status", "strength", "label", "label_name"}
        missing = sorted(need - set(scores.columns))
        if missing:
            raise TableError(f"{path}: not a comp_clip_scores output, missing column(s) {missing}")
        for col in ("clip_txt_sim", "clip_img_sim", "strength"):
            scores[col] = scores[col].astype(float)
        scores[KEEP] = parse_bool_column(scores[KEEP], path, KEEP).to_numpy()
        if args.img_threshold is not None and args.threshold is None:
            raise ValueError("--img_threshold needs --threshold (the image-text threshold to re-apply)")
        if args.threshold is not None:
            ok = (scores["score_status"] == "ok").to_numpy()
            keep = keep_mask(scores["clip_txt_sim"], scores["clip_img_sim"], args.threshold, args.img_threshold)
            scores[KEEP] = np.asarray(keep, dtype=bool) & ok
        recorded = (read_parquet_metadata(path).get("scoring") or {}) if path.suffix == ".parquet" else {}
        print(f"{path}: {len(scores)} rows")
        if recorded:
            print(f"recorded thresholds: clip_txt_sim >= {recorded.get('threshold')}, "
                  f"clip_img_sim >= {recorded.get('img_threshold')}")  # fmt: skip
        if args.threshold is not None:
            print(f"re-applied: clip_txt_sim >= {args.threshold}, clip_img_sim >= {args.img_threshold}")
        print(format_summary(summarize(scores), max_classes=args.max_classes))
        if args.plots_dir:
            th = args.threshold if args.threshold is not None else recorded.get("threshold")
            img_th = args.img_threshold if args.threshold is not None else recorded.get("img_threshold")
            out = Path(args.plots_dir) / DISTRIBUTIONS_PLOT
            print(f"distributions: {plot_distributions(scores, out, th, img_th)}")
    except (TableError, ValueError, OSError) as err:
        print(f"inspect_scores: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
