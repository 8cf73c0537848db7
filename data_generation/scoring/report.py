"""See what the CLIP filter keeps: a kept/total table, score distributions per strength, and a grid of the
synthetic-to-real spectrum of a few source images with their scores."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from curriculum.contracts import CLIP_IMG_SIM, CLIP_TXT_SIM, KEEP, SCORE_STATUS
from curriculum.tables import atomic_path


def summarize(scores: pd.DataFrame) -> pd.DataFrame:
    """Return kept/total per strength, per class and overall.

    Columns: `group` ('strength', 'class' or 'all'), `value`, `total`, `kept`, `kept_fraction`, `not_scorable`,
    `mean_clip_txt_sim`, `mean_clip_img_sim` (means over scorable rows).
    """
    df = scores.assign(
        _ok=scores[SCORE_STATUS].eq("ok"),
        _class=scores["label_name"]
        .astype(str)
        .where(scores["label_name"].astype(str) != "", scores["label"].astype(str)),
    )

    def agg(frame: pd.DataFrame, group: str, key) -> pd.DataFrame:
        g = frame.groupby(key, sort=True)
        out = pd.DataFrame(
            {
                "total": g.size(),
                "kept": g[KEEP].sum().astype(int),
                "not_scorable": g["_ok"].apply(lambda s: int((~s).sum())),
                "mean_clip_txt_sim": g[CLIP_TXT_SIM].mean(),
                "mean_clip_img_sim": g[CLIP_IMG_SIM].mean(),
            }
        ).reset_index(names="value")
        out.insert(0, "group", group)
        return out

    parts = [agg(df, "strength", "strength"), agg(df, "class", "_class"), agg(df.assign(_all="all"), "all", "_all")]
    out = pd.concat(parts, ignore_index=True)
    out["value"] = out["value"].astype(str)
    out["kept_fraction"] = (out["kept"] / out["total"]).round(4)
    cols = [
        "group",
        "value",
        "total",
        "kept",
        "kept_fraction",
        "not_scorable",
        "mean_clip_txt_sim",
        "mean_clip_img_sim",
    ]
    return out[cols]


def format_summary(summary: pd.DataFrame, max_classes: int = 20) -> str:
    """Return the summary as aligned text (per strength, then the `max_classes` classes with most rows)."""
    by_strength = summary[summary["group"] == "strength"]
    by_class = summary[summary["group"] == "class"].sort_values("total", ascending=False)
    lines = []
    for title, part in (
        ("per strength", by_strength),
        ("per class", by_class.head(max_classes)),
        ("all", summary[summary["group"] == "all"]),
    ):
        lines.append(f"{title}:")
        lines.append(part.drop(columns="group").to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        if title == "per class" and len(by_class) > max_classes:
            lines.append(f"  ... {len(by_class) - max_classes} more classes in clip_summary.csv")
    return "\n".join(lines)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return Path(path)


def score_units(scorer: dict | None) -> dict[str, str]:
    """Return what each score column measures for a scorer description ("cosine" unless it says otherwise).

    The offline probe's image-text score is a class probability, not a cosine; its `describe()` says so.
    """
    scorer = scorer or {}
    return {
        col: "probability" if "probab" in str(scorer.get(col, "")).lower() else "cosine"
        for col in (CLIP_TXT_SIM, CLIP_IMG_SIM)
    }


def plot_distributions(
    scores: pd.DataFrame,
    path: str | os.PathLike,
    threshold: float | None = None,
    img_threshold: float | None = None,
    units: dict[str, str] | None = None,
) -> Path:
    """Write a PNG of the image-text and image-image similarity distributions per strength; return its path.

    One box per strength (the rows that have that score: a row without a real image still has its image-text
    score), the thresholds as dashed lines, and the kept fraction above each box.
    """
    plt = _pyplot()
    strengths = sorted(scores["strength"].unique())
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.1 * len(strengths) + 4), 4.2), squeeze=False)
    for ax, col, title, thr in (
        (axes[0, 0], CLIP_TXT_SIM, "image-text (prompt)", threshold),
        (axes[0, 1], CLIP_IMG_SIM, "image-image (real source)", img_threshold),
    ):
        data = [scores.loc[scores["strength"] == s, col].dropna().to_numpy() for s in strengths]
        positions = np.arange(1, len(strengths) + 1)
        nonempty = [(p, d) for p, d in zip(positions, data) if len(d)]
        if nonempty:
            ax.boxplot([d for _, d in nonempty], positions=[p for p, _ in nonempty], widths=0.6, showfliers=True)
            for p, d in nonempty:
                jitter = np.random.default_rng(int(p)).uniform(-0.15, 0.15, len(d))
                ax.scatter(p + jitter, d, s=6, alpha=0.4, color="tab:blue")
        if thr is not None:
            ax.axhline(thr, ls="--", color="tab:red", lw=1, label=f"threshold {thr:g}")
            ax.legend(loc="lower left", fontsize=8)
        kept = [
            f"{s:g}\n{int(scores.loc[scores['strength'] == s, 'keep'].sum())}/{int((scores['strength'] == s).sum())}"
            for s in strengths
        ]
        ax.set_xticks(positions, kept, fontsize=8)
        ax.set_xlabel("strength, kept/total")
        ax.set_ylabel(f"{col} ({(units or {}).get(col, 'cosine')})")
        ax.set_title(title, fontsize=10)
    fig.suptitle("scores of the synthetic images per strength (0 = the real image, 1 = text only)", fontsize=10)
    fig.tight_layout()
    out = _save(fig, path)
    plt.close(fig)
    return out


def plot_spectrum_grid(
    scores: pd.DataFrame, rows: pd.DataFrame, path: str | os.PathLike, n_samples: int = 4, thumb: int = 128
) -> Path | None:
    """Write a PNG grid: for up to `n_samples` source images, the real image then one variant per strength
    (the smallest seed and text guidance), titled with its scores, framed green if kept, red if dropped.

    `rows` is the spectrum index (it has `syn_file`/`real_file`). Returns the path, or None if nothing to show.
    """
    from curriculum.images import SourceImageError, load_rgb

    plt = _pyplot()
    df = scores.assign(syn_file=rows["syn_file"].to_numpy(), real_file=rows["real_file"].to_numpy())
    # the samples with the most scorable variants are the most informative; ties by id for determinism
    counts = df[df[SCORE_STATUS] == "ok"].groupby("sample_id").size().sort_values(ascending=False, kind="stable")
    sample_ids = list(counts.index[:n_samples]) or list(dict.fromkeys(df["sample_id"]))[:n_samples]
    if not sample_ids:
        return None
    strengths = sorted(df["strength"].unique())
    fig, axes = plt.subplots(
        len(sample_ids), len(strengths) + 1, figsize=(1.6 * (len(strengths) + 1), 1.9 * len(sample_ids)), squeeze=False
    )

    def show(ax, file, title, color=None):
        ax.set_xticks([])
        ax.set_yticks([])
        try:
            img = load_rgb(file) if file else None
        except SourceImageError:
            img = None
        if img is None:
            ax.text(0.5, 0.5, "missing /\nunreadable", ha="center", va="center", fontsize=7, transform=ax.transAxes)
        else:
            img.thumbnail((thumb, thumb))
            # tiny images (8-32 px) shown as pixels, not as a blur
            ax.imshow(np.asarray(img), interpolation="nearest" if max(img.size) < 64 else "antialiased")
        ax.set_title(title, fontsize=7)
        if color:
            for spine in ax.spines.values():
                spine.set_edgecolor(color)
                spine.set_linewidth(2.5)

    for r, sid in enumerate(sample_ids):
        mine = df[df["sample_id"] == sid].sort_values(["strength", "text_guidance", "seed"])
        show(axes[r, 0], mine["real_file"].iloc[0], f"real\n{str(sid)[:14]}")
        axes[r, 0].set_ylabel(str(mine["label_name"].iloc[0])[:16], fontsize=7)
        for c, s in enumerate(strengths, start=1):
            at = mine[mine["strength"] == s]
            if at.empty:
                axes[r, c].axis("off")
                continue
            v = at.iloc[0]
            if v[SCORE_STATUS] == "ok":
                title = f"s={s:g}\ntxt {v[CLIP_TXT_SIM]:.3f} img {v[CLIP_IMG_SIM]:.3f}"
            else:
                title = f"s={s:g}\nnot scorable"
            show(axes[r, c], v["syn_file"], title, "tab:green" if v[KEEP] else "tab:red")
    fig.suptitle(
        f"synthetic-to-real spectrum: real image, then strength {strengths[0]:g} to {strengths[-1]:g} "
        "(green kept, red dropped)",
        fontsize=9,
    )
    fig.tight_layout()
    out = _save(fig, path)
    plt.close(fig)
    return out
