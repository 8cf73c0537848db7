"""Prototypes: k-means on features, each sample's distance to its centroid, and distance scaling.

Built for millions of samples (DESIGN.md §5): k is chosen by the Davies-Bouldin index on a subsample over
a grid, k-means is fitted on a subsample, and every sample is then assigned in chunks, so `features` may be
a memory-mapped float16 array that never sits in memory whole.

k-means backends, chosen by name from `KMEANS`: `sklearn` (default on the CPU; MiniBatchKMeans or KMeans), `torch`
(k-means++ seeding from scikit-learn, then Lloyd iterations on any torch device, e.g. a GPU) and `faiss`
(optional: only when `import faiss` works).

Distance scalings, chosen by name from `SCALINGS` (d = Euclidean distance to the assigned centroid):
`minmax` per cluster, (d - min_c) / (max_c - min_c) as in the seed library (a cluster whose distances are all
equal gets 0); `rank`, the within-cluster percentile rank (ties averaged) mapped to [0, 1] (a one-member
cluster gets 0); `global`, min-max over all samples; `none`, the raw distances.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from .registry import Registry

KMEANS: Registry[Callable[..., np.ndarray]] = Registry("k-means backend")
SCALINGS: Registry[Callable[[np.ndarray, np.ndarray], np.ndarray]] = Registry("distance scaling")


# --------------------------------------------------------------------------------------------------------
# k-means backends: (x float32 (n, dim), k, seed, **options) -> centroids float32 (k, dim)
@KMEANS.register("sklearn")
def kmeans_sklearn(
    x: np.ndarray, k: int, seed: int = 42, minibatch: bool = True, n_threads: int | None = 1, **_: object
) -> np.ndarray:
    """Return k centroids from scikit-learn's MiniBatchKMeans (or KMeans when minibatch=False).

    `n_threads` caps scikit-learn's OpenMP threads (None: no cap). The default is 1 because, once torch has
    run in the process, scikit-learn's libgomp and torch's contend: a 3000x16 fit measured 1.6 s with two
    threads against 0.02 s with one on a 2-core machine. Use backend 'torch' for large fits.
    """
    from sklearn.cluster import KMeans, MiniBatchKMeans
    from threadpoolctl import threadpool_limits

    if minibatch and len(x) > 2048:
        model = MiniBatchKMeans(n_clusters=k, random_state=seed, batch_size=min(4096, len(x)), n_init=3)
    else:
        model = KMeans(n_clusters=k, random_state=seed, n_init=3)
    # float64 input: scikit-learn's float32 path upcasts in small chunks and measured ~3-6x slower here
    with threadpool_limits(limits=n_threads, user_api="openmp"):
        return model.fit(np.asarray(x, dtype=np.float64)).cluster_centers_.astype(np.float32)


@KMEANS.register("torch")
def kmeans_torch(
    x: np.ndarray, k: int, seed: int = 42, device: str | torch.device = "cpu", n_iter: int = 50, **_: object
) -> np.ndarray:
    """Return k centroids from Lloyd iterations in torch on `device`, seeded by scikit-learn's k-means++."""
    from sklearn.cluster import kmeans_plusplus

    init, _ = kmeans_plusplus(x, k, random_state=seed)
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)
    c = torch.from_numpy(init.astype(np.float32)).to(device)
    for _ in range(n_iter):
        labels = _nearest(xt, c)[0]
        sums = torch.zeros_like(c).index_add_(0, labels, xt)
        counts = torch.bincount(labels, minlength=k).to(xt.dtype)
        new = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], c)  # empty: keep old
        if torch.allclose(new, c, atol=1e-7):
            c = new
            break
        c = new
    return c.cpu().numpy()


@KMEANS.register("faiss")
def kmeans_faiss(x: np.ndarray, k: int, seed: int = 42, n_iter: int = 25, **_: object) -> np.ndarray:
    """Return k centroids from faiss.Kmeans (optional extra: `pip install faiss-cpu` or `faiss-gpu`)."""
    try:
        import faiss
    except ImportError as err:
        raise ImportError(
            "k-means backend 'faiss' needs the optional package faiss "
            "(pip install faiss-cpu); or use backend='sklearn' or 'torch'"
        ) from err
    km = faiss.Kmeans(x.shape[1], k, niter=n_iter, seed=seed, max_points_per_centroid=max(256, len(x) // k + 1))
    km.train(np.ascontiguousarray(x, dtype=np.float32))
    return np.asarray(km.centroids, dtype=np.float32)


def faiss_available() -> bool:
    """Return True when the optional faiss backend can be imported."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------------------------------------
# assignment
def _nearest(x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2; ||x||^2 is the same for every centroid, so argmin skips it
    scores = (c * c).sum(1)[None, :] - 2.0 * x @ c.T
    labels = scores.argmin(1)
    # exact distance to the chosen centroid (the expanded form loses digits for near points)
    dist = (x - c[labels]).norm(dim=1)
    return labels, dist


def assign(
    features,
    centroids: np.ndarray,
    chunk_size: int = 65536,
    device: str | torch.device = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Return (nearest-centroid index int64, Euclidean distance float32) for every row, chunk by chunk.

    `features` may be any array-like indexable by row slices (a float16 memmap is read chunk by chunk).
    """
    n = len(features)
    labels = np.empty(n, dtype=np.int64)
    dists = np.empty(n, dtype=np.float32)
    c = torch.from_numpy(np.ascontiguousarray(centroids, dtype=np.float32)).to(device)
    with torch.no_grad():
        for i in range(0, n, chunk_size):
            x = torch.from_numpy(np.ascontiguousarray(features[i : i + chunk_size], dtype=np.float32)).to(device)
            lab, dist = _nearest(x, c)
            labels[i : i + len(x)] = lab.cpu().numpy()
            dists[i : i + len(x)] = dist.cpu().numpy()
    return labels, dists


def _check_features(features) -> None:
    shape = getattr(features, "shape", None)
    if shape is None or len(shape) != 2 or shape[0] == 0 or shape[1] == 0:
        raise ValueError(f"features must be a 2-d (n_samples, dim) array, got shape {shape}")


def _subsample_rows(features, idx: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Return float32 rows of `features` at a sorted random subset (of `idx`) of at most `size` rows."""
    if len(idx) > size:
        idx = np.sort(np.random.default_rng(seed).choice(idx, size=size, replace=False))
    x = np.asarray(features[idx], dtype=np.float32)  # sorted fancy indexing reads a memmap sequentially
    if not np.isfinite(x).all():
        raise ValueError("features contain NaN or inf")
    return x


def cluster_grid(cluster_range: tuple[int, int], max_points: int = 12) -> list[int]:
    """Return the candidate k values: every integer in the range, or a log grid of about max_points values."""
    lo, hi = int(cluster_range[0]), int(cluster_range[1])
    if not 2 <= lo <= hi:
        raise ValueError(f"cluster_range must be (lo, hi) with 2 <= lo <= hi, got {cluster_range!r}")
    if hi - lo + 1 <= max_points:
        return list(range(lo, hi + 1))
    return sorted({round(float(v)) for v in np.geomspace(lo, hi, max_points)})


def select_n_clusters(
    x: np.ndarray, grid: list[int], backend: str = "sklearn", seed: int = 42, **backend_options: object
) -> tuple[int, dict[int, float]]:
    """Return (k with the lowest Davies-Bouldin index on x, {k: index}) over the candidate grid."""
    from sklearn.metrics import davies_bouldin_score

    fit = KMEANS.get(backend)
    scores: dict[int, float] = {}
    for k in grid:
        if k >= len(x):
            continue
        labels, _ = assign(x, fit(x, k, seed=seed, **backend_options))
        if len(np.unique(labels)) < 2:
            continue
        scores[k] = float(davies_bouldin_score(np.asarray(x, dtype=np.float64), labels))
    if not scores:
        raise ValueError(f"cannot choose k: no candidate in {grid} fits {len(x)} samples")
    return min(scores, key=scores.get), scores


@dataclass
class Prototypes:
    """k-means prototypes of a dataset.

    `assignments[i]`: global cluster id of sample i; `centroids[c]`: centroid of cluster c; `distances[i]`:
    Euclidean distance of sample i to its centroid; `cluster_class[c]`: the class label cluster c belongs to
    (supervised mode) or -1; `n_clusters`: the k used per class (or overall); `selection_scores`: the
    Davies-Bouldin index per candidate k when k was chosen automatically.
    """

    assignments: np.ndarray
    centroids: np.ndarray
    distances: np.ndarray
    cluster_class: np.ndarray
    n_clusters: int
    selection_scores: dict[int, float] = field(default_factory=dict)


def default_kmeans_backend(device: str | torch.device | None = "cpu") -> str:
    """Return the k-means backend used when none is named: 'torch' for a non-CPU device ('cuda', 'cuda:1',
    'mps', a torch.device, ...), 'sklearn' for the CPU (or None)."""
    if device is None:
        return "sklearn"
    return "sklearn" if torch.device(device).type == "cpu" else "torch"


def fit_prototypes(
    features,
    n_clusters: int | None = None,
    labels=None,
    backend: str | None = None,
    cluster_range: tuple[int, int] = (2, 20),
    fit_sample_size: int = 100_000,
    select_sample_size: int = 10_000,
    chunk_size: int = 65536,
    seed: int = 42,
    device: str | torch.device = "cpu",
    **backend_options: object,
) -> Prototypes:
    """Return the Prototypes of `features` (n, dim), optionally clustered within each class of `labels`.

    An explicit `n_clusters` is always used; None chooses k by Davies-Bouldin over `cluster_grid(cluster_range)`
    on at most `select_sample_size` samples (supervised: the mean index over the up-to-8 largest classes
    with more than k samples). k-means is fitted on at most `fit_sample_size` samples (per class), then all
    samples are assigned in chunks of `chunk_size`. Supervised mode: a class with fewer than k samples
    (n_c < k) is one cluster whose prototype is the class mean. `backend` None: `default_kmeans_backend(device)`
    ('torch' on a GPU, 'sklearn' on the CPU).
    """
    _check_features(features)
    n = features.shape[0]
    if backend is None:
        backend = default_kmeans_backend(device)
    fit = KMEANS.get(backend)
    opts = dict(backend_options)
    if backend == "torch":
        opts["device"] = device
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (n,):
            raise ValueError(f"labels must have one entry per sample ({n}), got shape {labels.shape}")
    if n_clusters is not None and (int(n_clusters) != n_clusters or n_clusters < 1):
        raise ValueError(f"n_clusters must be a positive integer, got {n_clusters!r}")

    scores: dict[int, float] = {}
    if labels is None:
        if n_clusters is None:
            x_sel = _subsample_rows(features, np.arange(n), select_sample_size, seed)
            n_clusters, scores = select_n_clusters(x_sel, cluster_grid(cluster_range), backend, seed, **opts)
        k = int(n_clusters)
        if k > n:
            raise ValueError(f"n_clusters={k} exceeds the number of samples ({n})")
        x_fit = _subsample_rows(features, np.arange(n), fit_sample_size, seed)
        centroids = fit(x_fit, k, seed=seed, **opts)
        assignments, distances = assign(features, centroids, chunk_size, device)
        return Prototypes(assignments, centroids, distances, np.full(k, -1), k, scores)

    classes, inverse = np.unique(labels, return_inverse=True)
    members = [np.nonzero(inverse == j)[0] for j in range(len(classes))]
    if n_clusters is None:
        n_clusters, scores = _select_supervised(
            features, members, cluster_range, backend, seed, select_sample_size, opts
        )
    k = int(n_clusters)
    assignments = np.empty(n, dtype=np.int64)
    distances = np.empty(n, dtype=np.float32)
    all_centroids, cluster_class = [], []
    offset = 0
    for cls, idx in zip(classes, members):
        x_fit = _subsample_rows(features, idx, fit_sample_size, seed)
        if len(idx) < k:
            cents = x_fit.mean(0, keepdims=True)  # documented: too small to split, its mean is its prototype
        else:
            cents = fit(x_fit, k, seed=seed, **opts)
        lab, dist = assign(_RowView(features, idx), cents, chunk_size, device)
        assignments[idx] = lab + offset
        distances[idx] = dist
        all_centroids.append(cents)
        cluster_class += [cls] * len(cents)
        offset += len(cents)
    return Prototypes(assignments, np.concatenate(all_centroids), distances, np.asarray(cluster_class), k, scores)


class _RowView:
    """Rows `idx` of an array, sliceable like an array (so `assign` can chunk a class of a memmap)."""

    def __init__(self, features, idx: np.ndarray):
        self.features, self.idx = features, idx

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, sl: slice) -> np.ndarray:
        return np.asarray(self.features[self.idx[sl]])


def _select_supervised(features, members, cluster_range, backend, seed, select_sample_size, opts):
    grid = cluster_grid(cluster_range)
    largest = sorted(members, key=len, reverse=True)[:8]
    per_class = max(100, select_sample_size // max(1, len(largest)))
    totals: dict[int, list[float]] = {}
    for idx in largest:
        x = _subsample_rows(features, idx, per_class, seed)
        usable = [k for k in grid if k < len(x)]
        if not usable:
            continue
        _, sc = select_n_clusters(x, usable, backend, seed, **opts)
        for k, v in sc.items():
            totals.setdefault(k, []).append(v)
    if not totals:
        raise ValueError(f"cannot choose k: every class has at most {grid[0]} samples; pass n_clusters")
    scores = {k: float(np.mean(v)) for k, v in totals.items()}
    return min(scores, key=scores.get), scores


# --------------------------------------------------------------------------------------------------------
# scaling
@SCALINGS.register("minmax")
def scale_minmax(d: np.ndarray, clusters: np.ndarray) -> np.ndarray:
    """Return per-cluster (d - min) / (max - min); 0 where a cluster's distances are all equal."""
    g = pd.Series(d).groupby(clusters)
    lo, hi = g.transform("min").to_numpy(), g.transform("max").to_numpy()
    span = hi - lo
    return np.where(span > 0, (d - lo) / np.where(span > 0, span, 1.0), 0.0)


@SCALINGS.register("rank")
def scale_rank(d: np.ndarray, clusters: np.ndarray) -> np.ndarray:
    """Return the within-cluster rank (ties averaged) mapped to [0, 1]: (rank - 1) / (size - 1); 0 if size 1."""
    s = pd.Series(d)
    g = s.groupby(clusters)
    rank = g.rank(method="average").to_numpy()
    size = g.transform("size").to_numpy().astype(np.float64)
    return np.where(size > 1, (rank - 1.0) / np.maximum(size - 1.0, 1.0), 0.0)


@SCALINGS.register("global")
def scale_global(d: np.ndarray, clusters: np.ndarray) -> np.ndarray:
    """Return (d - min) / (max - min) over all samples (0 if all equal)."""
    span = d.max() - d.min()
    return (d - d.min()) / span if span > 0 else np.zeros_like(d)


@SCALINGS.register("none")
def scale_none(d: np.ndarray, clusters: np.ndarray) -> np.ndarray:
    """Return the distances unchanged."""
    return d.copy()


def scale_distances(d, clusters, mode: str = "minmax") -> np.ndarray:
    """Return float64 difficulty scores from distances `d` and cluster ids `clusters` with scaling `mode`."""
    d = np.asarray(d, dtype=np.float64)
    clusters = np.asarray(clusters)
    if d.ndim != 1 or clusters.shape != d.shape:
        raise ValueError(f"d and clusters must be 1-d of equal length, got {d.shape} and {clusters.shape}")
    if d.size == 0:
        raise ValueError("d is empty")
    if not np.isfinite(d).all():
        raise ValueError("d contains NaN or inf")
    return SCALINGS.get(mode)(d, clusters)


__all__ = [
    "KMEANS",
    "SCALINGS",
    "Prototypes",
    "assign",
    "cluster_grid",
    "default_kmeans_backend",
    "faiss_available",
    "fit_prototypes",
    "scale_distances",
    "select_n_clusters",
]
