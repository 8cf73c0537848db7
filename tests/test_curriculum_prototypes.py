"""k-means backends, k selection, chunked assignment, memmapped float16 features and distance scalings."""

from __future__ import annotations

import numpy as np
import pytest

from curriculum.prototypes import (
    KMEANS,
    SCALINGS,
    assign,
    cluster_grid,
    faiss_available,
    fit_prototypes,
    scale_distances,
    select_n_clusters,
)


def blobs(n=600, k=4, dim=8, seed=0, spread=0.3):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, dim)) * 4
    lab = rng.integers(0, k, n)
    return (centers[lab] + spread * rng.normal(size=(n, dim))).astype(np.float32), lab, centers


BACKENDS = [b for b in KMEANS.names() if b != "faiss" or faiss_available()]


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_backend_recovers_well_separated_clusters(backend):
    x, lab, _ = blobs()
    protos = fit_prototypes(x, n_clusters=4, backend=backend)
    assert protos.centroids.shape == (4, 8)
    # each true cluster maps to exactly one found cluster
    pairs = {(a, b) for a, b in zip(lab, protos.assignments)}
    assert len(pairs) == 4
    exact = np.linalg.norm(x - protos.centroids[protos.assignments], axis=1)
    np.testing.assert_allclose(protos.distances, exact, rtol=1e-4, atol=1e-5)


def test_faiss_backend_missing_is_a_clear_error_or_works():
    x, _, _ = blobs(n=200)
    if faiss_available():
        assert fit_prototypes(x, n_clusters=3, backend="faiss").centroids.shape == (3, 8)
    else:
        with pytest.raises(ImportError, match="faiss-cpu"):
            fit_prototypes(x, n_clusters=3, backend="faiss")


def test_explicit_n_clusters_is_honoured_and_auto_selection_finds_k():
    x, _, _ = blobs(n=500, k=5)
    assert fit_prototypes(x, n_clusters=7).n_clusters == 7
    auto = fit_prototypes(x, cluster_range=(2, 8))
    assert auto.n_clusters == 5
    assert min(auto.selection_scores, key=auto.selection_scores.get) == 5
    assert len(np.unique(auto.assignments)) == 5


def test_cluster_grid_is_log_spaced_for_wide_ranges():
    assert cluster_grid((2, 6)) == [2, 3, 4, 5, 6]
    g = cluster_grid((2, 1000), max_points=12)
    assert g[0] == 2 and g[-1] == 1000 and len(g) <= 12
    with pytest.raises(ValueError, match="cluster_range"):
        cluster_grid((1, 5))


def test_chunked_assignment_equals_one_shot_and_reads_a_float16_memmap(tmp_path):
    x, _, _ = blobs(n=1000)
    c = fit_prototypes(x, n_clusters=4).centroids
    lab1, d1 = assign(x, c, chunk_size=10_000)
    lab2, d2 = assign(x, c, chunk_size=97)
    np.testing.assert_array_equal(lab1, lab2)
    np.testing.assert_allclose(d1, d2, rtol=1e-6)
    mm = np.lib.format.open_memmap(tmp_path / "f.npy", mode="w+", dtype=np.float16, shape=x.shape)
    mm[:] = x
    mm.flush()
    ro = np.load(tmp_path / "f.npy", mmap_mode="r")
    protos = fit_prototypes(ro, n_clusters=4, chunk_size=128, fit_sample_size=300)
    assert isinstance(ro, np.memmap) and protos.distances.shape == (1000,)
    np.testing.assert_array_equal(np.unique(protos.assignments), np.arange(4))


def test_fit_on_a_subsample_still_assigns_every_sample():
    x, lab, _ = blobs(n=2000)
    protos = fit_prototypes(x, n_clusters=4, fit_sample_size=200)
    assert protos.assignments.shape == (2000,)
    assert len({(a, b) for a, b in zip(lab, protos.assignments)}) == 4


def test_supervised_clusters_within_classes_and_small_classes_are_one_cluster():
    x, _, _ = blobs(n=300, k=3)
    labels = np.repeat([0, 1, 2], [150, 148, 2])  # class 2 has fewer samples than k
    protos = fit_prototypes(x, n_clusters=3, labels=labels)
    assert protos.centroids.shape == (3 + 3 + 1, 8)
    for c in (0, 1, 2):
        assert set(protos.cluster_class[protos.assignments[labels == c]]) == {c}
    small = labels == 2
    assert len(np.unique(protos.assignments[small])) == 1
    np.testing.assert_allclose(protos.centroids[protos.assignments[small][0]], x[small].mean(0), rtol=1e-5)
    with pytest.raises(ValueError, match="labels"):
        fit_prototypes(x, n_clusters=3, labels=labels[:-1])


def test_select_n_clusters_reports_davies_bouldin_per_candidate():
    x, _, _ = blobs(n=400, k=3)
    k, scores = select_n_clusters(x, [2, 3, 4, 6])
    assert k == 3 and set(scores) == {2, 3, 4, 6}
    assert scores[3] == min(scores.values())


def test_scalings():
    d = np.array([1.0, 3.0, 2.0, 5.0, 5.0, 7.0, 4.0])
    c = np.array([0, 0, 0, 1, 1, 1, 2])
    np.testing.assert_allclose(scale_distances(d, c, "minmax"), [0, 1, 0.5, 0, 0, 1, 0])
    np.testing.assert_allclose(scale_distances(d, c, "rank"), [0, 1, 0.5, 0.25, 0.25, 1, 0])
    np.testing.assert_allclose(scale_distances(d, c, "global"), (d - 1) / 6)
    np.testing.assert_allclose(scale_distances(d, c, "none"), d)
    assert set(SCALINGS.names()) == {"minmax", "rank", "global", "none"}
    with pytest.raises(KeyError, match="minmax"):
        scale_distances(d, c, "min-max")
    with pytest.raises(ValueError, match="equal length"):
        scale_distances(d, c[:-1])
