"""The seed library's API (CurriculumLearning & co.) with its defects fixed, on tiny offline models."""

from __future__ import annotations

import json
import math
import os
import time

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset, Subset, TensorDataset

from curriculum import (
    CurriculumLearning,
    CurriculumSampler,
    PretrainedModelExtractor,
    create_curriculum_learning,
    create_curriculum_learning_with_dino,
    create_dino_model,
)
from curriculum.weighting import effective_size, max_effective_size


class Blobs(Dataset):
    """Images whose pixels are drawn around 3 class means: a dataset with real cluster structure."""

    def __init__(self, n=90, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.targets = [i % 3 for i in range(n)]
        means = torch.randn(3, 3, 8, 8, generator=g) * 3
        self.x = torch.stack([means[t] + 0.3 * torch.randn(3, 8, 8, generator=g) for t in self.targets])
        self.sample_ids = [f"img{i:03d}" for i in range(n)]

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return self.x[i], self.targets[i]


def small_cnn():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 64, 5)
    ).eval()


@pytest.fixture(scope="module")
def fitted():
    _, cl = create_curriculum_learning(small_cnn(), Blobs(), n_clusters=3, warmup_iterations=100)
    return cl


def test_extractor_hooks_a_named_layer_pools_and_normalises():
    model = small_cnn()
    x = Blobs().x[:4]
    ex = PretrainedModelExtractor(model, feature_layer="2")
    f = ex.features_of(x)
    expected = nn.functional.normalize(model[:3](x).mean((2, 3)), dim=1)
    torch.testing.assert_close(f, expected)
    assert not model[2]._forward_hooks  # no hook left behind
    raw = PretrainedModelExtractor(model, normalize_features=False).features_of(x)
    torch.testing.assert_close(raw, model(x))
    with pytest.raises(ValueError, match="Close names: 2"):
        PretrainedModelExtractor(model, feature_layer="22")
    with pytest.raises(ValueError, match="not a module"):
        PretrainedModelExtractor(model, feature_layer="encoder.layer4")


def test_explicit_n_clusters_is_honoured_even_with_auto_selection_on():
    cl = CurriculumLearning(PretrainedModelExtractor(small_cnn()), n_clusters=5, auto_select_clusters=True)
    cl.fit(Blobs())
    assert cl.optimal_clusters_ == 5 and len(np.unique(cl.prototypes_.assignments)) == 5
    auto = CurriculumLearning(PretrainedModelExtractor(small_cnn()), cluster_range=(2, 6)).fit(Blobs())
    assert auto.optimal_clusters_ in auto.prototypes_.selection_scores


def test_difficulty_is_scaled_distance_and_weights_are_probability_vectors(fitted):
    d = fitted.get_difficulty_weights()
    assert d.shape == (90,) and d.min() == 0.0 and d.max() == 1.0
    for it in (0, 10, 50, 99, 100, 5000):
        for strategy in ("prototypes_first", "hard_first", "difficulty", "easy"):
            p = fitted.get_curriculum_weights(strategy, current_iteration=it)
            assert p.shape == (90,) and (p >= 0).all() and p.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(fitted.get_curriculum_weights(current_iteration=100), 1 / 90)
    p = fitted.get_curriculum_weights("prototypes_first", 0)
    q = fitted.get_curriculum_weights("hard_first", 0)
    assert p[np.argmin(d)] > p[np.argmax(d)] and q[np.argmax(d)] > q[np.argmin(d)]
    np.testing.assert_array_equal(p, fitted.get_curriculum_weights("difficulty", 0))


def test_effective_size_follows_the_warmup_ramp(fitted):
    sizes = [effective_size(fitted.get_curriculum_weights("prototypes_first", it)) for it in (0, 25, 50, 75)]
    assert sizes[0] == pytest.approx(0.3, abs=2e-4)
    assert sizes == sorted(sizes)
    m = max_effective_size(90)
    assert sizes[2] == pytest.approx(0.3 + 0.5 * (m - 0.3), abs=2e-4)
    cos = CurriculumLearning(None, n_clusters=3, ramp="cosine", warmup_iterations=100)
    cos.fit_features(np.random.default_rng(0).random((90, 4)).astype(np.float32))
    assert effective_size(cos.get_curriculum_weights(current_iteration=25)) < fitted.target_effective_size(25) - 0.01


def test_per_step_calls_never_rerun_the_bisection(fitted):
    fitted.get_curriculum_weights("prototypes_first", 0)
    table = fitted.table("prototypes_first", warmup_only=True)
    n = table.n_evaluations
    for it in range(100):
        fitted.get_curriculum_weights("prototypes_first", it)
    assert table.n_evaluations == n


def test_analysis_helpers(fitted):
    d = fitted.get_difficulty_weights()
    t = fitted._compute_temperature(0.5, "prototypes_first")
    assert fitted._compute_effective_dataset_size(d, t, "prototypes_first") == pytest.approx(0.5, abs=1e-6)
    assert fitted._compute_temperature(0.5) == fitted.temperature_for_effective_size(0.5, "difficulty")
    tmax = fitted._compute_max_temperature("prototypes_first")
    assert math.isfinite(tmax) and tmax > t
    assert fitted.effective_dataset_size(d, tmax, "prototypes_first") == pytest.approx(max_effective_size(90), abs=2e-4)
    with pytest.raises(ValueError, match="reachable range"):
        fitted._compute_temperature(0.9)


def test_targets_above_the_maximum_fail_clearly():
    cl = CurriculumLearning(None, n_clusters=2, initial_effective_percentage=0.9)
    with pytest.raises(ValueError, match="initial_effective_percentage"):
        cl.fit_features(np.random.default_rng(0).random((50, 3)).astype(np.float32))
    with pytest.raises(ValueError, match="initial_effective_percentage"):
        CurriculumLearning(None, initial_effective_percentage=1.5)
    with pytest.raises(ValueError, match="n_clusters"):
        CurriculumLearning(None, auto_select_clusters=False)


def test_supervised_mode_with_subset_and_explicit_labels():
    ds = Blobs(n=120)
    sub = Subset(ds, list(range(0, 120, 2)) + [1])  # Subset has no `targets`: labels come through it
    cl = CurriculumLearning(PretrainedModelExtractor(small_cnn()), n_clusters=2, use_labels=True)
    cl.fit(sub)
    np.testing.assert_array_equal(cl.labels_, np.asarray(ds.targets)[sub.indices])
    assert cl.sample_ids_[:2] == ["img000", "img002"]
    for c in np.unique(cl.labels_):
        assert set(cl.prototypes_.cluster_class[cl.prototypes_.assignments[cl.labels_ == c]]) == {c}
    # explicit labels win over the dataset's, and a class smaller than k is a single cluster
    labels = np.asarray(cl.labels_).copy()
    labels[:1] = 9  # class 9 has one sample (< k = 2)
    cl2 = CurriculumLearning(PretrainedModelExtractor(small_cnn()), n_clusters=2, use_labels=True).fit(sub, labels)
    assert cl2.get_difficulty_weights()[0] == 0.0  # its own prototype: defined, minimal difficulty
    plain = TensorDataset(ds.x[:30])
    with pytest.raises(ValueError, match="use_labels"):
        CurriculumLearning(PretrainedModelExtractor(small_cnn()), n_clusters=2, use_labels=True).fit(plain)


def test_save_load_without_pickle_keyed_by_sample_ids(fitted, tmp_path):
    arrays_path, json_path = fitted.save_weights(tmp_path / "w")
    assert arrays_path.read_bytes()[:8] != b"\x80\x04\x95"[:8]  # not a pickle
    meta = json.loads(json_path.read_text())
    assert meta["sample_ids"][:2] == ["img000", "img001"] and meta["config"]["optimal_clusters"] == 3
    assert meta["arrays"] == ["assignments", "difficulty", "distances", "labels"]  # no features unless asked
    loaded = CurriculumLearning(None, warmup_iterations=100).load_weights(
        tmp_path / "w.safetensors", sample_ids=fitted.sample_ids_
    )
    np.testing.assert_array_equal(loaded.get_difficulty_weights(), fitted.get_difficulty_weights())
    for it in (0, 40, 100):
        np.testing.assert_allclose(
            loaded.get_curriculum_weights("prototypes_first", it), fitted.get_curriculum_weights("prototypes_first", it)
        )
    with pytest.raises(ValueError, match="sample ids differ"):
        CurriculumLearning(None).load_weights(tmp_path / "w", sample_ids=fitted.sample_ids_[::-1])
    fitted.save_weights(tmp_path / "f", include_features=True)
    assert "features" in json.loads((tmp_path / "f.json").read_text())["arrays"]
    # a weights file paired with another run's JSON is refused
    (tmp_path / "f.json").replace(tmp_path / "w.json")
    other = CurriculumLearning(None, n_clusters=2).fit_features(
        np.random.default_rng(0).random((90, 3)), sample_ids=[f"x{i}" for i in range(90)]
    )
    other.save_weights(tmp_path / "o")
    (tmp_path / "o.json").replace(tmp_path / "w.json")
    with pytest.raises(ValueError, match="do not belong together"):
        CurriculumLearning(None).load_weights(tmp_path / "w")


def test_sampler_follows_the_curriculum(fitted):
    sampler = CurriculumSampler(
        fitted.schedule("prototypes_first"), batch_size=10, num_samples=10 * 50, refresh_every=10, seed=0
    )
    idx = np.array(list(sampler)).reshape(50, 10)
    d = fitted.get_difficulty_weights()
    early, late = d[idx[:10]].mean(), d[idx[40:]].mean()
    assert early < late  # prototypes first, the rest of the data later


def tiny_dino_kwargs():
    return {"img_size": 32, "depth": 2}


def test_dino_names_map_to_timm_and_local_weights_load(tmp_path):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    ref = timm.create_model("vit_small_patch16_224.dino", pretrained=False, num_classes=0, **tiny_dino_kwargs()).eval()
    save_file(ref.state_dict(), str(tmp_path / "dino.safetensors"))
    model = create_dino_model("dino_vits16", weights=tmp_path / "dino.safetensors", **tiny_dino_kwargs())
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model(x), ref(x))
    ds = TensorDataset(torch.randn(12, 3, 32, 32))
    w, cl = create_curriculum_learning_with_dino(
        ds, n_clusters=2, weights=tmp_path / "dino.safetensors", model_kwargs=tiny_dino_kwargs()
    )
    assert w.shape == (12,) and cl.features_.shape == (12, 384)
    w2, _ = create_curriculum_learning_with_dino(ds, n_clusters=2, model=ref)
    np.testing.assert_allclose(w, w2, atol=1e-5)
    with pytest.raises(ValueError, match="dino_vits16"):
        create_dino_model("dino_vits32")


def test_dino_offline_without_weights_fails_clearly_and_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t = time.perf_counter()
    with pytest.raises(RuntimeError, match="weights="):
        create_curriculum_learning_with_dino(
            TensorDataset(torch.randn(4, 3, 32, 32)), n_clusters=2, model_kwargs=tiny_dino_kwargs()
        )
    assert time.perf_counter() - t < 10
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_readme_example_runs_and_prints_what_it_says(tmp_path, capsys):
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "curriculum" / "README.md").read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    code = code.replace('"/tmp/curriculum_state"', repr(str(tmp_path / "state")))
    exec(compile(code, "README.md", "exec"), {})  # noqa: S102 - running our own README example is the test
    assert capsys.readouterr().out.split("\n")[:2] == ["0.3 True", "True"]
    assert (tmp_path / "state.safetensors").is_file() and (tmp_path / "state.json").is_file()


def test_unknown_strategy_is_a_clear_error_at_any_iteration(fitted):
    for it in (0, 10_000):
        with pytest.raises(KeyError, match="prototypes_first"):
            fitted.get_curriculum_weights("prototype_first", it)


def test_default_kmeans_backend_is_torch_on_any_non_cpu_device():
    from curriculum.prototypes import default_kmeans_backend

    for device in ("cuda", "cuda:1", torch.device("cuda", 0), "mps", "meta"):
        assert default_kmeans_backend(device) == "torch", device
    for device in ("cpu", torch.device("cpu"), None):
        assert default_kmeans_backend(device) == "sklearn", device


def test_curriculum_learning_picks_the_kmeans_backend_from_the_fit_device(monkeypatch):
    import curriculum.learning as learning
    from curriculum.prototypes import fit_prototypes

    used = []

    def spy(features, **kw):  # record the choice; fit on the CPU whatever device was asked for (no GPU here)
        used.append((kw["backend"], str(kw["device"])))
        return fit_prototypes(features, **dict(kw, device="cpu"))

    monkeypatch.setattr(learning, "fit_prototypes", spy)
    x = np.random.default_rng(0).normal(size=(60, 4)).astype(np.float32)
    auto = CurriculumLearning(None, n_clusters=3)
    assert auto.backend is None and auto.backend_ is None
    auto.fit_features(x, device="cuda")
    assert used[-1] == ("torch", "cuda") and auto.backend_ == "torch" and auto.config()["backend"] == "torch"
    auto.fit_features(x)  # the CPU default
    assert used[-1] == ("sklearn", "cpu") and auto.config()["backend"] == "sklearn"
    explicit = CurriculumLearning(None, n_clusters=3, backend="sklearn").fit_features(x, device="cuda:0")
    assert used[-1] == ("sklearn", "cuda:0") and explicit.backend_ == "sklearn"  # a named backend always wins
    with pytest.raises(KeyError, match="k-means backend|kmeans"):
        CurriculumLearning(None, n_clusters=3, backend="sklaern")
