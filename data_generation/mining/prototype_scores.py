"""The prototype-distance difficulty scorer: embeddings from any torch model (DINO ViT-S/16 through timm by
default), k-means prototypes and each sample's distance to its centroid — all from `curriculum` (one
implementation of the prototype maths)."""

from __future__ import annotations

import pandas as pd

from curriculum.distributed import sharded_rows
from data_generation.mining.difficulty import SampleImages


def prototype_distance_scores(table: pd.DataFrame, opts) -> pd.DataFrame:
    """Return `prototype_distance` (to the centroid) and `prototype_cluster` per sample, keyed by sample_id.

    `opts` is a scorer_runs.ScorerOptions: `feature_model` (a DINO name or timm id), `feature_weights` (a local
    state dict; without it the hub is needed), `feature_img_size`, `n_clusters` (None: chosen by
    Davies-Bouldin), `use_labels` (cluster within each class), `batch_size`, `device`, `seed`.
    """
    from timm.data import create_transform, resolve_data_config

    from curriculum import PretrainedModelExtractor, create_dino_model, fit_prototypes

    kwargs = {"img_size": opts.feature_img_size} if opts.feature_img_size else {}
    try:
        model = create_dino_model(opts.feature_model, weights=opts.feature_weights, **kwargs)
    except TypeError as err:  # a CNN takes any input size and has no img_size argument
        if "img_size" not in str(err):
            raise
        model = create_dino_model(opts.feature_model, weights=opts.feature_weights)
    cfg = resolve_data_config({}, model=model)
    if opts.feature_img_size:
        cfg.update(input_size=(3, opts.feature_img_size, opts.feature_img_size), crop_pct=1.0)
    extractor = PretrainedModelExtractor(model, normalize_features=True)
    transform = create_transform(**cfg)

    def share(start: int, stop: int):  # several processes: each embeds a share of the batches, gathered in order
        rows = SampleImages(table.iloc[start:stop], transform)
        return extractor.extract(rows, device=opts.device, batch_size=opts.batch_size)[0]

    features = sharded_rows(len(table), opts.batch_size, share)
    labels = table["label"].to_numpy() if opts.use_labels else None
    protos = fit_prototypes(features, n_clusters=opts.n_clusters, labels=labels, seed=opts.seed)
    return pd.DataFrame(
        {"prototype_distance": protos.distances.astype("float64"), "prototype_cluster": protos.assignments},
        index=pd.Index(table["sample_id"].tolist(), name="sample_id"),
    )
