"""CLIPScore scoring and filtering of a synthetic spectrum (DESIGN.md §3.3, §4 "CLIPScore filter").

For every synthetic image: `clip_txt_sim` = cosine(image, its prompt) and `clip_img_sim` = cosine(image, its
real source image), from projected, L2-normalised embeddings with the model's own preprocessing. Each
prompt and each real image is embedded once, synthetic images in batches (decoded and preprocessed in worker
threads while the model runs), and every embedding is cached on disk, so a rerun or a new threshold only
re-reads the cache.

`score_spectrum(ScoringConfig(...))` is what `comp_clip_scores.py` calls; tests call it directly.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter, deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from curriculum.contracts import (
    CLIP_IMG_SIM,
    CLIP_TXT_SIM,
    DISTRIBUTIONS_PLOT,
    FAILURES_FILE,
    FILTERED_FILE,
    GRID_PLOT,
    KEEP,
    SCORE_STATUS,
    SCORES_FILE,
    SUMMARY_FILE,
)
from curriculum.distributed import ProcessInfo, barrier, detect, gather_rows
from curriculum.images import SourceImageError, load_rgb
from curriculum.tables import read_class_names, write_csv, write_parquets
from data_generation.scoring.backends import ClipScorer, default_model, load_scorer
from data_generation.scoring.cache import EmbeddingCache, file_key
from data_generation.scoring.index import SpectrumIndex, build_index
from data_generation.scoring.report import plot_distributions, plot_spectrum_grid, score_units, summarize

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.25  # DisCL's image-text threshold for iWildCam (0.30 for ImageNet-LT), CLIP ViT-B/32


@dataclass
class ScoringConfig:
    """Everything one scoring run needs (the flags of comp_clip_scores.py)."""

    syn_path: str
    real_path: str | None = None
    threshold: float = DEFAULT_THRESHOLD
    img_threshold: float | None = None
    clip_backend: str = "transformers"
    clip_model: str | None = None
    clip_pretrained: str | None = None
    batch_size: int = 64
    device: str | None = None
    dtype: str | None = None
    manifest: str | None = None
    walk: bool = False
    data_csv: str | None = None
    prompt_template: str | None = None
    class_names: str | None = None
    output_dir: str | None = None
    cache_dir: str | None = None
    no_cache: bool = False
    num_workers: int = 2
    plots: bool = True
    grid_samples: int = 4
    progress: bool = True
    #: the --preset record (name, file, sha256, overrides), kept in the scores' metadata
    preset: dict | None = None
    #: the text each image is scored against: a template with {name} (the class name; the reference's
    #: ImageNet-LT filter uses "a photo of {name}"); None = the image's own generation prompt
    text_template: str | None = None

    def validate(self) -> None:
        """Raise ValueError naming the flag for settings that cannot work."""
        if self.text_template is not None and "{name}" not in self.text_template:
            raise ValueError(f"--text_template {self.text_template!r} needs a {{name}} placeholder")
        for flag, v in (("--threshold", self.threshold), ("--img_threshold", self.img_threshold)):
            if v is not None and not -1.0 <= v <= 1.0:
                raise ValueError(f"{flag} is a cosine similarity and must be in [-1, 1], got {v}")
        if self.batch_size < 1:
            raise ValueError(f"--batch_size must be >= 1, got {self.batch_size}")
        if self.num_workers < 0:
            raise ValueError(f"--num_workers must be >= 0, got {self.num_workers}")


@dataclass
class ScoringResult:
    """What a scoring run did: the scores, the files written and the counts."""

    scores: pd.DataFrame
    index: SpectrumIndex
    scorer: dict
    paths: dict = field(default_factory=dict)
    embedded: Counter = field(default_factory=Counter)  # computed now, per kind
    reused: Counter = field(default_factory=Counter)  # taken from the cache, per kind
    failure_reasons: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def n_total(self) -> int:
        """Return the number of synthetic images scored (rows)."""
        return len(self.scores)

    @property
    def n_kept(self) -> int:
        """Return the number of rows kept by the filter."""
        return int(self.scores[KEEP].sum())

    @property
    def n_failed(self) -> int:
        """Return the number of rows with a problem status (bad or missing synthetic or real image)."""
        return int((self.scores[SCORE_STATUS] != "ok").sum())

    def line(self) -> str:
        """Return the one-line end-of-run summary."""
        emb = ", ".join(f"{k} {self.embedded[k]} new/{self.reused[k]} cached" for k in ("synthetic", "real", "text"))
        fails = "; ".join(f"{k} x{v}" for k, v in self.failure_reasons.most_common())
        rate = self.embedded["synthetic"] / self.seconds if self.seconds > 0 else 0.0
        return (
            f"kept {self.n_kept} of {self.n_total} synthetic images ({self.n_failed} not scorable)"
            f" in {self.seconds:.1f}s"
            f" ({rate:.1f} new img/s); embeddings: {emb}"
            + (f"; problems: {fails}" if fails else "")
            + (
                f"; {self.index.n_hidden_skipped} hidden image file(s) (name starting with '.') skipped by --walk"
                if self.index.n_hidden_skipped
                else ""
            )
        )


# ------------------------------------------------------------------------------------------------------
# pure parts
def keep_mask(
    txt_sim: np.ndarray, img_sim: np.ndarray, threshold: float | None, img_threshold: float | None
) -> np.ndarray:
    """Return keep = txt_sim >= threshold and (img_sim >= img_threshold if given).

    A NaN image-text score (no synthetic embedding) is never kept. A NaN image-image score (no real image)
    drops the row only when `img_threshold` is given: without one the image-image score is not filtered on.
    """
    txt_sim, img_sim = np.asarray(txt_sim, dtype=np.float64), np.asarray(img_sim, dtype=np.float64)
    keep = np.isfinite(txt_sim)
    if threshold is not None:
        keep &= np.nan_to_num(txt_sim, nan=-np.inf) >= threshold
    if img_threshold is not None:
        keep &= np.nan_to_num(img_sim, nan=-np.inf) >= img_threshold
    return keep


def _warn_if_filter_is_inert(scores: pd.DataFrame, scorable: np.ndarray, threshold: float | None) -> None:
    """Warn, with the numbers, when the image-text threshold keeps every scorable image or none of them: a filter
    that keeps all does nothing (a threshold below every score), one that keeps none leaves Phase 2 nothing."""
    n = int(scorable.sum())
    if threshold is None or n == 0:
        return
    sims = np.asarray(scores[CLIP_TXT_SIM], dtype=np.float64)[scorable]
    kept = int(np.asarray(scores[KEEP], dtype=bool)[scorable].sum())
    if kept == n:
        log.warning(
            "the filter keeps all %d scorable synthetic images: --threshold %.3f is below every %s (min %.3f)",
            n, threshold, CLIP_TXT_SIM, float(np.nanmin(sims)),
        )  # fmt: skip
    elif kept == 0:
        log.warning(
            "the filter keeps none of %d scorable synthetic images: --threshold %.3f is above every %s (max %.3f)",
            n, threshold, CLIP_TXT_SIM, float(np.nanmax(sims)),
        )  # fmt: skip


def rowwise_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Return the cosine of each row pair of two (N, D) matrices of unit rows (their dot products)."""
    return np.einsum("nd,nd->n", a.astype(np.float32), b.astype(np.float32))


def _short_reason(message: str) -> str:
    for key in (
        "missing synthetic image",
        "unreadable synthetic image",
        "missing real image",
        "unreadable real image",
        "no real image",
    ):
        if message.startswith(key):
            return key
    return message.split(":")[0][:60]


# ------------------------------------------------------------------------------------------------------
# embedding
def _load_pixels(scorer: ClipScorer, path: str, what: str) -> tuple[torch.Tensor | None, str | None]:
    """Return (pixels, None) or (None, reason) for one image file; never raises for a bad file."""
    if not path or not Path(path).is_file():
        return None, f"missing {what} image {path}"
    try:
        image = load_rgb(path)
    except SourceImageError as err:
        return None, f"unreadable {what} image {path}: {str(err).split(': ', 1)[-1]}"
    try:
        return scorer.preprocess(image), None
    except Exception as err:  # e.g. a 1x1 image a transform rejects: that file's problem, not the run's
        return None, f"unreadable {what} image {path}: preprocessing failed ({type(err).__name__}: {err})"


def embed_image_files(
    scorer: ClipScorer,
    items: Sequence[tuple[str, str]],
    cache: EmbeddingCache,
    batch_size: int,
    num_workers: int = 2,
    what: str = "synthetic",
    progress: bool = True,
    process: ProcessInfo | None = None,
) -> tuple[dict[str, str], int]:
    """Embed the (key, path) items not yet in `cache`, in batches; return ({key: failure reason}, n embedded).

    Decoding and preprocessing of the next batches run in `num_workers` threads while the model embeds the
    current one (0 = in this thread). Unreadable or missing files are returned as failures, never raised.
    Under several processes (`process`), batch k is embedded by process k % world only; after each round of
    `world` batches the embeddings are gathered, so every process ends with the same cache, and the batches
    are one process's (the same numbers). The count returned is over all processes.
    """
    todo = [(k, p) for k, p in dict(items).items() if k not in cache]
    errors: dict[str, str] = {}
    if not todo:
        return errors, 0
    batches = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
    if process is not None and process.distributed:
        return _embed_rounds(scorer, batches, cache, num_workers, what, progress, process)
    bar = tqdm(total=len(todo), desc=f"embed {what} images", unit="img", disable=not progress)
    n_done = 0
    pool = ThreadPoolExecutor(max_workers=num_workers) if num_workers > 0 else None
    submit = _pixel_loader(scorer, what, pool)

    try:
        ahead = deque(submit(b) for b in batches[:2])  # keep two batches in flight
        for i, batch in enumerate(batches):
            futures = ahead.popleft()
            if i + 2 < len(batches):
                ahead.append(submit(batches[i + 2]))
            keys, pixels = [], []
            for (key, _), fut in zip(batch, futures):
                px, err = fut.result()
                if err is not None:
                    errors[key] = err
                else:
                    keys.append(key)
                    pixels.append(px)
            if pixels:
                cache.put(keys, scorer.embed_pixels(torch.stack(pixels)))
                n_done += len(keys)
            bar.update(len(batch))
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        cache.flush()  # whatever was computed survives an interruption
        bar.close()
    return errors, n_done


def _embed_rounds(
    scorer: ClipScorer,
    batches: list[list[tuple[str, str]]],
    cache: EmbeddingCache,
    num_workers: int,
    what: str,
    progress: bool,
    process: ProcessInfo,
) -> tuple[dict[str, str], int]:
    """`embed_image_files` for one of several processes: this process embeds batches rank, rank + world, ...;
    after each round every process's statuses and embeddings are gathered (collectives, no pickling)."""
    world, rank = process.world_size, process.rank
    mine = batches[rank::world]
    rounds = -(-len(batches) // world)
    errors: dict[str, str] = {}
    n_done = n_here = 0
    bar = tqdm(total=sum(map(len, mine)), desc=f"embed {what} images ({rank + 1}/{world})", disable=not progress)
    pool = ThreadPoolExecutor(max_workers=num_workers) if num_workers > 0 else None
    submit = _pixel_loader(scorer, what, pool)

    try:
        ahead = deque(submit(b) for b in mine[:2])
        for i in range(rounds):
            batch = mine[i] if i < len(mine) else []
            futures = ahead.popleft() if batch else []
            if i + 2 < len(mine):
                ahead.append(submit(mine[i + 2]))
            ok, pixels = [], []
            for (key, _), fut in zip(batch, futures):
                px, err = fut.result()
                ok.append(err is None)
                if err is not None:
                    errors[key] = err
                else:
                    pixels.append(px)
            emb = scorer.embed_pixels(torch.stack(pixels)) if pixels else np.zeros((0, 0), dtype=np.float32)
            n_here += len(pixels)
            # every process's statuses and embeddings of this round, in batch order
            status = gather_rows(torch.tensor(ok, dtype=torch.float32).reshape(-1, 1)).numpy()[:, 0] > 0.5
            rows = gather_rows(torch.from_numpy(np.ascontiguousarray(emb, dtype=np.float32))).numpy()
            round_items = [item for b in batches[i * world : (i + 1) * world] for item in b]
            keys = [k for (k, _), good in zip(round_items, status) if good]
            if keys:
                cache.put(keys, rows)
                n_done += len(keys)
            for (key, path), good in zip(round_items, status):
                if not good and key not in errors:  # another process's failure: its reason, read again here
                    errors[key] = _load_pixels(scorer, path, what)[1] or f"{what} image {path}: not embedded"
            bar.update(len(batch))
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        cache.flush()
        bar.close()
    log.info("process %d/%d embedded %d of %d %s images", rank + 1, world, n_here, n_done, what)
    return errors, n_done


def _pixel_loader(scorer: ClipScorer, what: str, pool: ThreadPoolExecutor | None):
    """Return submit(batch) -> one future per (key, path) of the batch, reading and preprocessing its image in
    `pool` (inline when there is no pool), so the embedding loops keep batches in flight while the model runs."""

    def submit(batch):
        if pool is None:
            return [_Done(_load_pixels(scorer, p, what)) for _, p in batch]
        return [pool.submit(_load_pixels, scorer, p, what) for _, p in batch]

    return submit


class _Done:
    """A finished 'future' for the in-thread path."""

    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value


def embed_texts_cached(scorer: ClipScorer, texts: Sequence[str], cache: EmbeddingCache, batch_size: int) -> int:
    """Embed the distinct `texts` not in `cache` (keyed by the text itself); return how many were computed."""
    todo = cache.missing(texts)
    for i in range(0, len(todo), batch_size):
        chunk = todo[i : i + batch_size]
        cache.put(chunk, scorer.embed_texts(chunk))
    cache.flush()
    return len(todo)


# ------------------------------------------------------------------------------------------------------
# the run
def _model_cache_dir(root: Path, desc: dict) -> Path:
    """Return the cache folder of one model: a readable name plus a hash of everything that shapes embeddings."""
    import hashlib
    import json
    import re

    blob = json.dumps(desc, sort_keys=True, default=str).encode()
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{desc.get('backend')}-{Path(str(desc.get('model_id'))).name}")[:60]
    return root / f"{slug}-{hashlib.sha256(blob).hexdigest()[:12]}"


def score_spectrum(
    cfg: ScoringConfig, scorer: ClipScorer | None = None, process: ProcessInfo | None = None
) -> ScoringResult:
    """Score every synthetic image of `cfg.syn_path`, write the outputs and return the result.

    Writes to `cfg.output_dir` (default: the generation folder): `clip_scores.parquet` (manifest columns +
    `clip_img_sim, clip_txt_sim, keep, score_status`; thresholds, rule and model in the metadata),
    `manifest-filtered.parquet` (the kept rows), `clip_summary.csv`, `clip_failures.csv` (if any) and, with
    `cfg.plots`, the distribution and spectrum-grid PNGs. `scorer` injects a loaded model (tests, benchmark).
    Under several processes (`process`, default from the launcher's environment) each embeds its share of the
    real and synthetic images; the embeddings are gathered, and the main process writes the cache and outputs.
    """
    t0 = time.perf_counter()
    cfg.validate()
    names = read_class_names(cfg.class_names) if cfg.class_names else None
    index = build_index(cfg.syn_path, cfg.real_path, cfg.manifest, cfg.walk, cfg.data_csv, cfg.prompt_template, names)
    rows = index.rows
    log.info("scoring %d synthetic images from %s", len(rows), index.source)

    process = process or detect()
    if scorer is None:
        device = process.device(cfg.device)
        model = cfg.clip_model or default_model(cfg.clip_backend)
        scorer = load_scorer(cfg.clip_backend, model, pretrained=cfg.clip_pretrained, device=device, dtype=cfg.dtype)
    desc = scorer.describe()
    cache_root = (
        None if cfg.no_cache else _model_cache_dir(Path(cfg.cache_dir or Path(cfg.syn_path) / "clip_cache"), desc)
    )
    caches = {kind: EmbeddingCache(cache_root, kind, write=process.is_main) for kind in ("text", "real", "synthetic")}
    barrier()  # every process has read the cache before the main process adds to it (the same work lists)
    result = ScoringResult(scores=pd.DataFrame(), index=index, scorer=desc)

    # 1. prompts, once each: the generation prompt, or the class's text of --text_template
    if cfg.text_template:
        rows = rows.copy()
        rows["scored_text"] = [
            cfg.text_template.format(name=(names or {}).get(int(y), str(n)))
            for y, n in zip(rows["label"], rows["label_name"])
        ]
    prompts = rows["scored_text" if cfg.text_template else "prompt"].astype(str).tolist()
    n_prompts = len(set(prompts))
    result.embedded["text"] = embed_texts_cached(scorer, prompts, caches["text"], cfg.batch_size)
    result.reused["text"] = n_prompts - result.embedded["text"]

    # 2. real images, once each (keyed by sample id + file signature)
    real_keys = [file_key(str(s), f) if f else "" for s, f in zip(rows["sample_id"], rows["real_file"])]
    real_items = [(k, f) for k, f in zip(real_keys, rows["real_file"]) if k]
    n_real = len(dict(real_items))
    real_err, result.embedded["real"] = embed_image_files(
        scorer, real_items, caches["real"], cfg.batch_size, cfg.num_workers, "real", cfg.progress, process
    )
    result.reused["real"] = n_real - result.embedded["real"] - len(real_err)

    # 3. synthetic images, batched
    syn_keys = [file_key(str(s), f) for s, f in zip(rows["synthetic_id"], rows["syn_file"])]
    syn_err, result.embedded["synthetic"] = embed_image_files(
        scorer,
        list(zip(syn_keys, rows["syn_file"])),
        caches["synthetic"],
        cfg.batch_size,
        cfg.num_workers,
        "synthetic",
        cfg.progress,
        process,
    )
    result.reused["synthetic"] = len(set(syn_keys)) - result.embedded["synthetic"] - len(syn_err)

    # 4. similarities, status, keep
    dim = len(caches["text"].get(prompts[0])) if prompts else 0
    nan = np.full(dim, np.nan, dtype=np.float32)
    syn = (
        np.stack([caches["synthetic"].get(k) if k not in syn_err else nan for k in syn_keys])
        if len(rows)
        else np.zeros((0, dim))
    )
    real = (
        np.stack([caches["real"].get(k) if (k and k not in real_err) else nan for k in real_keys])
        if len(rows)
        else np.zeros((0, dim))
    )
    txt = caches["text"].stack(prompts) if len(rows) else np.zeros((0, dim))
    status = []
    for sk, rk, sid in zip(syn_keys, real_keys, rows["sample_id"]):
        if sk in syn_err:
            status.append(syn_err[sk])
        elif not rk:
            status.append(f"no real image for sample {sid}: the row has no filepath; pass --real_path or --data_csv")
        elif rk in real_err:
            status.append(real_err[rk])
        else:
            status.append("ok")
    scores = rows.drop(columns=["syn_file", "real_file"]).copy()
    scores[CLIP_IMG_SIM] = rowwise_cosine(syn, real)
    # a backend may define its own image-text score (the offline probe: a class probability); CLIP: cosine
    text_similarity = getattr(scorer, "text_similarity", None) or rowwise_cosine
    scores[CLIP_TXT_SIM] = text_similarity(syn, txt) if len(rows) else np.zeros(0)
    # A bad synthetic image is never kept. A missing/unreadable real image leaves clip_img_sim NaN (the status
    # says why); it drops the row only when the image-image score is filtered on (--img_threshold).
    syn_ok = np.array([k not in syn_err for k in syn_keys], dtype=bool)
    real_ok = np.array([bool(k) and k not in real_err for k in real_keys], dtype=bool)
    scores[KEEP] = keep_mask(scores[CLIP_TXT_SIM], scores[CLIP_IMG_SIM], cfg.threshold, cfg.img_threshold)
    scores[KEEP] &= syn_ok & (real_ok if cfg.img_threshold is not None else True)
    _warn_if_filter_is_inert(scores, syn_ok, cfg.threshold)
    scores[SCORE_STATUS] = status
    result.scores = scores
    for s in status:
        if s != "ok":
            result.failure_reasons[_short_reason(s)] += 1

    # 5. files (by the main process: every process holds the same scores)
    result.paths = write_outputs(result, cfg, rows) if process.is_main else {}
    result.seconds = time.perf_counter() - t0
    return result


def scoring_metadata(result: ScoringResult, cfg: ScoringConfig) -> dict:
    """Return the file metadata: the manifest's own (generation config) plus a `scoring` record."""
    meta = dict(result.index.metadata)
    meta["scoring"] = {
        "threshold": cfg.threshold,
        "img_threshold": cfg.img_threshold,
        "rule": "keep = synthetic image readable and clip_txt_sim >= threshold"
        + (
            " and real image readable and clip_img_sim >= img_threshold"
            if cfg.img_threshold is not None
            else " (no image threshold: a missing real image leaves clip_img_sim NaN and does not drop the row)"
        ),
        "similarity": "cosine of projected, L2-normalised CLIP embeddings (model's own preprocessing)",
        "scorer": result.scorer,
        "source": result.index.source,
        "syn_path": str(Path(cfg.syn_path).resolve()),
        "real_root": result.index.real_root,
        "config": {k: v for k, v in asdict(cfg).items()},
        "counts": {"total": result.n_total, "kept": result.n_kept, "not_scorable": result.n_failed},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return meta


def scores_digest(scores: pd.DataFrame) -> str:
    """Return a short hash of a scores table's content (its rows and columns), recorded as `scoring_id`."""
    h = hashlib.sha256(",".join(map(str, scores.columns)).encode())
    h.update(pd.util.hash_pandas_object(scores.astype(str), index=False).to_numpy().tobytes())
    return h.hexdigest()[:16]


def write_outputs(result: ScoringResult, cfg: ScoringConfig, rows: pd.DataFrame) -> dict:
    """Write the scores, the filtered manifest, the summary, failures and plots; return {name: path}."""
    out = Path(cfg.output_dir or cfg.syn_path)
    scores = result.scores
    meta = scoring_metadata(result, cfg)
    # The scores and the filtered manifest are one unit: both carry the same `scoring_id` (a hash of the
    # scores) and are written to temporary files first, then renamed; a kill between the two renames leaves
    # ids that disagree, which readers (training.trainers.data.load_synthetic) detect, and a rerun rewrites both.
    meta = dict(meta, scoring_id=scores_digest(scores))
    written = write_parquets([(scores, out / SCORES_FILE, meta), (scores[scores[KEEP]], out / FILTERED_FILE, meta)])
    paths = {
        "scores": str(written[0]),
        "filtered": str(written[1]),
        "summary": str(write_csv(summarize(scores), out / SUMMARY_FILE)),
    }
    bad = scores[SCORE_STATUS] != "ok"
    if bad.any():
        fails = scores.loc[bad, ["synthetic_id", "sample_id", "path", SCORE_STATUS]].rename(
            columns={SCORE_STATUS: "reason"}
        )
        paths["failures"] = str(write_csv(fails, out / FAILURES_FILE))
        for reason in fails["reason"].head(5):
            log.warning("%s", reason)
        if int(bad.sum()) > 5:
            log.warning("... %d more problem rows listed in %s", int(bad.sum()) - 5, paths["failures"])
    if cfg.plots and len(scores):
        paths["distributions"] = str(
            plot_distributions(
                scores, out / DISTRIBUTIONS_PLOT, cfg.threshold, cfg.img_threshold, units=score_units(result.scorer)
            )
        )
        grid = plot_spectrum_grid(scores, rows, out / GRID_PLOT, n_samples=cfg.grid_samples)
        if grid is not None:
            paths["grid"] = str(grid)
    return paths


__all__ = [
    "DEFAULT_THRESHOLD",
    "ScoringConfig",
    "ScoringResult",
    "embed_image_files",
    "embed_texts_cached",
    "keep_mask",
    "rowwise_cosine",
    "score_spectrum",
    "summarize",
]
