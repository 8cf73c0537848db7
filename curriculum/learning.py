"""`CurriculumLearning`: the seed library's API (same names and parameters) over the prototype maths.

fit: features -> k-means prototypes -> per-sample distance to its centroid -> scaled difficulty d in [0, 1].
get_curriculum_weights: p_i ∝ exp(-d_i / T) ('prototypes_first', alias 'difficulty') or exp(+d_i / T)
('hard_first', alias 'easy') with T chosen so the effective size (expected fraction of distinct samples in N
draws) follows a warm-up ramp from `initial_effective_percentage` to its maximum 1 - (1 - 1/N)^N; from
`warmup_iterations` on, uniform. The temperature comes from a table built once per mode, so a call costs
one softmax pass over N, not a bisection.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from .features import PretrainedModelExtractor, create_dino_model
from .prototypes import KMEANS, SCALINGS, Prototypes, default_kmeans_backend, fit_prototypes, scale_distances
from .state import load_curriculum_state, save_curriculum_state
from .weighting import (
    TemperatureTable,
    canonical_mode,
    effective_size,
    max_effective_size,
    sampling_probabilities,
    warmup_target,
)


def dataset_labels(dataset) -> np.ndarray | None:
    """Return the labels a dataset carries (`targets`/`labels`, through any Subset nesting), or None."""
    if isinstance(dataset, DataLoader):
        dataset = dataset.dataset
    if isinstance(dataset, Subset):
        parent = dataset_labels(dataset.dataset)
        return None if parent is None else parent[np.asarray(dataset.indices)]
    for attr in ("targets", "labels"):
        val = getattr(dataset, attr, None)
        if val is not None and not callable(val):
            return np.asarray(val)
    return None


def dataset_sample_ids(dataset, n: int) -> list[str]:
    """Return the sample ids of a dataset (`sample_ids` attribute, through Subsets), else row numbers as str."""
    if isinstance(dataset, DataLoader):
        dataset = dataset.dataset
    if isinstance(dataset, Subset):
        parent = dataset_sample_ids(dataset.dataset, len(dataset.dataset))
        return [parent[i] for i in dataset.indices]
    ids = getattr(dataset, "sample_ids", None)
    if ids is not None:
        return [str(s) for s in ids]
    return [str(i) for i in range(n)]


class CurriculumLearning:
    """Prototype-based curriculum: difficulty by distance to k-means centroids, sampled by temperature.

    Seed-library parameters keep their names. `n_clusters`: k, always honoured when given (None: chosen by
    Davies-Bouldin over `cluster_range` when `auto_select_clusters`). `normalize_weights`: per-cluster
    min-max scaling (the seed's behaviour; False: raw distances) unless `scaling` names one of
    'minmax', 'rank', 'global', 'none'. `initial_effective_percentage`: the starting effective size, a
    fraction of the dataset (the expected fraction of distinct samples in N draws), at most
    1 - (1 - 1/N)^N ≈ 0.632. `use_minibatch_kmeans` picks MiniBatchKMeans in the sklearn backend.
    Extra: `backend` ('sklearn', 'torch', 'faiss'; default None: chosen at fit time from the device by
    `default_kmeans_backend` - 'torch' when fitting on a GPU or any other non-CPU device, 'sklearn' on the
    CPU; the choice made is `backend_` and is recorded in `config()`), `ramp` ('linear', 'cosine'),
    `max_effective_ratio` (end of the ramp; default the maximum), `fit_sample_size`, `select_sample_size`,
    `num_workers`.
    """

    def __init__(
        self,
        feature_extractor: PretrainedModelExtractor | None,
        n_clusters: int | None = None,
        auto_select_clusters: bool = True,
        cluster_range: tuple[int, int] = (2, 20),
        use_labels: bool = False,
        normalize_weights: bool = True,
        batch_size: int = 256,
        use_minibatch_kmeans: bool = True,
        initial_effective_percentage: float = 0.3,
        warmup_iterations: int = 1000,
        random_state: int = 42,
        *,
        scaling: str | None = None,
        backend: str | None = None,
        ramp: str = "linear",
        max_effective_ratio: float | None = None,
        fit_sample_size: int = 100_000,
        select_sample_size: int = 10_000,
        num_workers: int = 0,
    ):
        if not 0.0 < initial_effective_percentage <= 1.0:
            raise ValueError(f"initial_effective_percentage must lie in (0, 1], got {initial_effective_percentage!r}")
        if int(warmup_iterations) < 0:
            raise ValueError(f"warmup_iterations must be >= 0, got {warmup_iterations!r}")
        if n_clusters is None and not auto_select_clusters:
            raise ValueError(
                "n_clusters is None and auto_select_clusters is False: give n_clusters or allow auto-selection"
            )
        if ramp not in ("linear", "cosine"):
            raise ValueError(f"ramp must be 'linear' or 'cosine', got {ramp!r}")
        if backend is not None:
            KMEANS.get(backend)
        self.scaling = scaling if scaling is not None else ("minmax" if normalize_weights else "none")
        SCALINGS.get(self.scaling)
        self.feature_extractor = feature_extractor
        self.n_clusters, self.auto_select_clusters = n_clusters, auto_select_clusters
        self.cluster_range, self.use_labels = tuple(cluster_range), use_labels
        self.normalize_weights, self.batch_size = normalize_weights, batch_size
        self.use_minibatch_kmeans = use_minibatch_kmeans
        self.initial_effective_percentage = float(initial_effective_percentage)
        self.warmup_iterations, self.random_state = int(warmup_iterations), int(random_state)
        self.backend, self.ramp, self.max_effective_ratio = backend, ramp, max_effective_ratio
        self.backend_: str | None = backend  # the backend actually used (resolved from the device at fit time)
        self.fit_sample_size, self.select_sample_size = fit_sample_size, select_sample_size
        self.num_workers = num_workers
        self.features_: np.ndarray | None = None
        self.labels_: np.ndarray | None = None
        self.weights_: np.ndarray | None = None
        self.optimal_clusters_: int | None = None
        self.prototypes_: Prototypes | None = None
        self.sample_ids_: list[str] | None = None
        self._tables: dict[tuple[str, bool], TemperatureTable] = {}

    # ---------------------------------------------------------------------------------------------------
    # fitting
    def fit(
        self, dataset, labels=None, device: str | torch.device = "cpu", sample_ids: Sequence[str] | None = None
    ) -> CurriculumLearning:
        """Extract features of `dataset` (Dataset, Subset or DataLoader) and fit; return self.

        Labels for `use_labels=True` come from `labels`, else the dataset's `targets`/`labels` (also
        through Subset), else the second element of each batch.
        """
        if self.feature_extractor is None:
            raise ValueError("feature_extractor is None: use fit_features(features) instead")
        feats, batch_labels = self.feature_extractor.extract(dataset, device, self.batch_size, self.num_workers)
        if labels is None:
            labels = dataset_labels(dataset)
        if labels is None:
            labels = batch_labels
        if sample_ids is None:
            sample_ids = dataset_sample_ids(dataset, len(feats))
        return self.fit_features(feats, labels=labels, sample_ids=sample_ids, device=device)

    def fit_features(
        self, features, labels=None, sample_ids: Sequence[str] | None = None, device: str | torch.device = "cpu"
    ) -> CurriculumLearning:
        """Fit on precomputed features (N, D) (a float16 memmap works); return self."""
        n = features.shape[0]
        self._check_targets(n)  # before the (slow) k-means, not after
        if labels is not None:
            labels = np.asarray(labels)
            if labels.shape != (n,):
                raise ValueError(f"labels must have one entry per sample ({n}), got shape {labels.shape}")
        if self.use_labels and labels is None:
            raise ValueError("use_labels=True needs labels: pass labels=, or a dataset with targets/labels")
        ids = [str(i) for i in range(n)] if sample_ids is None else [str(s) for s in sample_ids]
        if len(ids) != n:
            raise ValueError(f"sample_ids has {len(ids)} entries for {n} samples")
        backend = self.backend if self.backend is not None else default_kmeans_backend(device)
        protos = fit_prototypes(
            features,
            n_clusters=self.n_clusters,
            labels=labels if self.use_labels else None,
            backend=backend,
            cluster_range=self.cluster_range,
            fit_sample_size=self.fit_sample_size,
            select_sample_size=self.select_sample_size,
            seed=self.random_state,
            device=device,
            minibatch=self.use_minibatch_kmeans,
        )
        self.features_, self.labels_, self.sample_ids_ = features, labels, ids
        self.backend_ = backend
        self.prototypes_, self.optimal_clusters_ = protos, protos.n_clusters
        self._set_weights(scale_distances(protos.distances, protos.assignments, self.scaling))
        return self

    def _set_weights(self, weights: np.ndarray) -> None:
        self._check_targets(len(weights))
        self.weights_ = np.asarray(weights, dtype=np.float64)
        self._tables = {}

    def _check_targets(self, n: int) -> None:
        m = max_effective_size(n)
        if self.initial_effective_percentage > m + 1e-12:
            raise ValueError(
                f"initial_effective_percentage={self.initial_effective_percentage} exceeds the maximum "
                f"effective size 1-(1-1/N)^N = {m:.6f} for N={n}"
            )
        if self.max_effective_ratio is not None and not (
            self.initial_effective_percentage <= self.max_effective_ratio <= m + 1e-12
        ):
            raise ValueError(
                f"max_effective_ratio={self.max_effective_ratio} must lie in [initial_effective_percentage, {m:.6f}]"
            )

    def _fitted(self) -> np.ndarray:
        if self.weights_ is None:
            raise ValueError("not fitted yet: call fit() or fit_features() first (or load_weights())")
        return self.weights_

    def table(self, strategy: str = "prototypes_first", warmup_only: bool = False) -> TemperatureTable:
        """Return the temperature table for `strategy`, built once per fit.

        warmup_only=True: a table covering only the warm-up's targets (from initial_effective_percentage up),
        cheaper to build; the analysis helpers use the full table.
        """
        mode = canonical_mode(strategy)
        key = (mode, warmup_only)
        if key not in self._tables:
            floor = self.initial_effective_percentage if warmup_only else None
            self._tables[key] = TemperatureTable(self._fitted(), mode, min_target=floor)
        return self._tables[key]

    # ---------------------------------------------------------------------------------------------------
    # weights
    def get_difficulty_weights(self) -> np.ndarray:
        """Return a copy of the per-sample difficulty (scaled distance to the prototype; larger = harder)."""
        return self._fitted().copy()

    @property
    def max_effective_size(self) -> float:
        """The largest reachable effective size, 1 - (1 - 1/N)^N."""
        return max_effective_size(len(self._fitted()))

    def target_effective_size(self, current_iteration: int, warmup_iterations: int | None = None) -> float:
        """Return the target effective size at `current_iteration` (the maximum once warm-up is over)."""
        w = self.warmup_iterations if warmup_iterations is None else int(warmup_iterations)
        end = self.max_effective_size if self.max_effective_ratio is None else self.max_effective_ratio
        if current_iteration >= w:
            return self.max_effective_size
        return warmup_target(current_iteration, w, self.initial_effective_percentage, end, self.ramp)

    def get_curriculum_weights(
        self, strategy: str = "difficulty", current_iteration: int = 0, warmup_iterations: int | None = None
    ) -> np.ndarray:
        """Return the sampling distribution (float64, sums to 1) at `current_iteration`.

        strategy: 'prototypes_first' (alias 'difficulty'): p ∝ exp(-d/T), prototypes first;
        'hard_first' (alias 'easy'): p ∝ exp(+d/T). Uniform from `warmup_iterations` on.
        """
        w = self.warmup_iterations if warmup_iterations is None else int(warmup_iterations)
        d = self._fitted()
        canonical_mode(strategy)  # an unknown strategy fails even after warm-up
        if current_iteration >= w:
            return np.full(len(d), 1.0 / len(d))
        table = self.table(strategy, warmup_only=True)
        return table.probabilities(table.interpolate(self.target_effective_size(current_iteration, w)))

    def schedule(self, strategy: str = "prototypes_first"):
        """Return a schedule object for `CurriculumSampler` that follows this warm-up curriculum."""
        from .schedules import SoftPacingSchedule

        end = None if self.max_effective_ratio is None else self.max_effective_ratio
        return SoftPacingSchedule(
            self._fitted(),
            self.warmup_iterations,
            pacing=self.ramp,
            start=self.initial_effective_percentage,
            end=end,
            mode=strategy,
            table=self.table(strategy, warmup_only=True),
        )

    # analysis helpers (seed names kept; public names below)
    def effective_dataset_size(self, weights, temperature: float, strategy: str = "difficulty") -> float:
        """Return the effective size (fraction of N) of p(T) for difficulty `weights`."""
        return effective_size(sampling_probabilities(weights, temperature, strategy))

    def temperature_for_effective_size(
        self, effective_size: float, strategy: str = "difficulty", tol: float = 1e-6
    ) -> float:
        """Return T whose effective size is within `tol` of the target (inf at the maximum); cached."""
        return self.table(strategy).solve(effective_size, tol)

    def max_temperature(self, strategy: str = "difficulty", tol: float = 1e-4) -> float:
        """Return the T at which the effective size is `tol` below its maximum (the maximum itself is T = inf)."""
        table = self.table(strategy)
        return table.solve(max(table.min, table.max - tol), tol / 10)

    _compute_effective_dataset_size = effective_dataset_size
    _compute_temperature = temperature_for_effective_size
    _compute_max_temperature = max_temperature

    # ---------------------------------------------------------------------------------------------------
    # persistence
    def config(self) -> dict[str, Any]:
        """Return the settings that produced the weights (JSON-serialisable)."""
        return {
            "n_clusters": self.n_clusters,
            "optimal_clusters": self.optimal_clusters_,
            "auto_select_clusters": self.auto_select_clusters,
            "cluster_range": list(self.cluster_range),
            "use_labels": self.use_labels,
            "scaling": self.scaling,
            "backend": self.backend_,
            "use_minibatch_kmeans": self.use_minibatch_kmeans,
            "random_state": self.random_state,
            "initial_effective_percentage": self.initial_effective_percentage,
            "warmup_iterations": self.warmup_iterations,
            "ramp": self.ramp,
            "max_effective_ratio": self.max_effective_ratio,
            "fit_sample_size": self.fit_sample_size,
            "select_sample_size": self.select_sample_size,
            "feature_layer": getattr(self.feature_extractor, "feature_layer", None),
            "model": type(getattr(self.feature_extractor, "model", None)).__name__,
        }

    def save_weights(self, path, include_features: bool = False):
        """Write the weights with their sample ids and config (safetensors + JSON); return the two paths."""
        d = self._fitted()
        arrays = {"difficulty": d}
        if self.prototypes_ is not None:
            arrays["distances"] = self.prototypes_.distances
            arrays["assignments"] = self.prototypes_.assignments
        if self.labels_ is not None:
            arrays["labels"] = np.asarray(self.labels_).astype(np.int64)
        if include_features:
            if self.features_ is None:
                raise ValueError("include_features=True but no features are held")
            arrays["features"] = np.asarray(self.features_)
        return save_curriculum_state(path, self.sample_ids_, arrays, self.config())

    def load_weights(self, path, sample_ids: Sequence[str] | None = None) -> CurriculumLearning:
        """Load weights saved by `save_weights` (checked against `sample_ids` when given); return self."""
        st = load_curriculum_state(path, sample_ids)
        self.sample_ids_ = st.sample_ids
        self.optimal_clusters_ = st.config.get("optimal_clusters")
        self.backend_ = st.config.get("backend", self.backend)
        self.labels_ = st.arrays.get("labels")
        self.features_ = st.arrays.get("features")
        self.prototypes_ = None
        self._set_weights(st.arrays["difficulty"])
        return self


def create_curriculum_learning(
    model: torch.nn.Module,
    dataset,
    n_clusters: int | None = None,
    use_labels: bool = False,
    device: str | torch.device = "cpu",
    initial_effective_percentage: float = 0.3,
    warmup_iterations: int = 1000,
    feature_layer: str | None = None,
    labels=None,
    **kwargs: Any,
):
    """Return (difficulty_weights, fitted CurriculumLearning) using `model` as the feature extractor."""
    curriculum = CurriculumLearning(
        PretrainedModelExtractor(model, feature_layer=feature_layer),
        n_clusters=n_clusters,
        use_labels=use_labels,
        initial_effective_percentage=initial_effective_percentage,
        warmup_iterations=warmup_iterations,
        **kwargs,
    )
    curriculum.fit(dataset, labels=labels, device=device)
    return curriculum.get_difficulty_weights(), curriculum


def create_curriculum_learning_with_dino(
    dataset,
    n_clusters: int | None = None,
    use_labels: bool = False,
    device: str | torch.device = "cpu",
    dino_model: str = "dino_vits16",
    initial_effective_percentage: float = 0.3,
    warmup_iterations: int = 1000,
    model: torch.nn.Module | None = None,
    weights=None,
    model_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
):
    """Return (difficulty_weights, fitted CurriculumLearning) with DINO features.

    `dino_model` maps to timm (dino_vits16 -> vit_small_patch16_224.dino, also vits8, vitb16, vitb8). A
    `model=` argument is used as is; `weights=` loads a local state dict; otherwise the hub (offline: a
    RuntimeError at once).
    """
    if model is None:
        model = create_dino_model(dino_model, weights=weights, **(model_kwargs or {}))
    return create_curriculum_learning(
        model,
        dataset,
        n_clusters=n_clusters,
        use_labels=use_labels,
        device=device,
        initial_effective_percentage=initial_effective_percentage,
        warmup_iterations=warmup_iterations,
        **kwargs,
    )
