"""Quality of a class-conditional pixel model: a held-out classifier's accuracy on its samples and a Fréchet
distance between sample and real-image features.

Both use only scikit-learn on the images themselves (grey values), so they run offline on a CPU: the
classifier is a logistic regression trained on real images the diffusion model never saw; the features for
the Fréchet distance are the first `n_components` principal components of those real images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import linalg


def grey_features(images: np.ndarray | torch.Tensor) -> np.ndarray:
    """Return N×(H·W) grey values in [0, 1] from N×3×H×W images in [-1, 1] (tensor) or N×H×W×3 in [0, 1] (array)."""
    if torch.is_tensor(images):
        return ((images.float().mean(dim=1) + 1) / 2).flatten(1).cpu().numpy().astype(np.float64)
    return np.asarray(images, dtype=np.float64).mean(axis=-1).reshape(len(images), -1)


@dataclass
class ReferenceJudge:
    """A classifier and a PCA feature map fitted on held-out real images, with the real features' statistics."""

    classifier: object
    pca: object
    real_features: np.ndarray
    cv_accuracy: float

    def accuracy(self, features: np.ndarray, labels: np.ndarray) -> float:
        """Return the fraction of images the classifier assigns to `labels`."""
        return float((self.classifier.predict(features) == np.asarray(labels)).mean())

    def frechet(self, features: np.ndarray) -> float:
        """Return the Fréchet distance between the PCA features of `features` and of the real images."""
        return frechet_distance(self.pca.transform(features), self.real_features)


def fit_judge(features: np.ndarray, labels: np.ndarray, n_components: int = 32, seed: int = 0) -> ReferenceJudge:
    """Return a ReferenceJudge fitted on real `features` (grey values) and `labels`, with its 5-fold CV accuracy."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.5))
    cv = float(cross_val_score(clf, features, labels, cv=5).mean())
    clf.fit(features, labels)
    pca = PCA(n_components=n_components, random_state=seed).fit(features)
    return ReferenceJudge(clf, pca, pca.transform(features), cv)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Return ‖μa − μb‖² + Tr(Σa + Σb − 2(ΣaΣb)^½) between the Gaussians fitted to feature sets `a` and `b`."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
    if not np.isfinite(root).all():  # near-singular product: regularise, as the FID reference code does
        eps = np.eye(cov_a.shape[0]) * 1e-6
        root = linalg.sqrtm((cov_a + eps) @ (cov_b + eps))
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * np.real(root)))


def sample_classes(
    model_dir: str, num_classes: int, per_class: int, steps: int, guidance: float, seed: int = 0, batch_size: int = 200
) -> tuple[np.ndarray, np.ndarray]:
    """Return (N×H×W×3 images in [0, 1], labels) sampled from a pixel model folder, `per_class` per class."""
    from data_generation.generation.backends.pixel_pipeline import ClassConditionalPixelPipeline

    pipe = ClassConditionalPixelPipeline.from_pretrained(model_dir)
    pipe.unet.eval()
    labels = np.repeat(np.arange(num_classes), per_class)
    out = []
    for b in range(0, len(labels), batch_size):
        lab = labels[b : b + batch_size]
        gens = [torch.Generator().manual_seed(seed * 100_003 + b + i) for i in range(len(lab))]
        out.append(
            pipe(class_labels=lab.tolist(), generator=gens, num_inference_steps=steps, guidance_scale=guidance).images
        )
    return np.concatenate(out), labels
