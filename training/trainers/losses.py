"""Losses: cross-entropy, balanced softmax for long-tail data, and FLYP's contrastive image-text loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from curriculum.registry import Registry

LOSSES: Registry = Registry("loss")


@LOSSES.register("ce")
def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, log_prior: torch.Tensor | None = None) -> torch.Tensor:
    """Return the mean cross-entropy of `logits` against `labels` (`log_prior` is ignored)."""
    return F.cross_entropy(logits, labels)


@LOSSES.register("balanced_softmax")
def balanced_softmax(logits: torch.Tensor, labels: torch.Tensor, log_prior: torch.Tensor | None = None) -> torch.Tensor:
    """Return the balanced-softmax loss: cross-entropy of `logits + log p(y)` (Ren et al., 2020).

    Training shifts each class's logit by the log of its training frequency, so the model itself learns
    balanced logits; at test time the plain logits are used.
    """
    if log_prior is None:
        raise ValueError("balanced softmax needs the class prior (training counts per class)")
    return F.cross_entropy(logits + log_prior.to(logits), labels)


def log_class_prior(counts: torch.Tensor) -> torch.Tensor:
    """Return log(n_c / sum n) for class counts (a class with no sample gets log(1e-12))."""
    counts = counts.double().clamp_min(1e-12)
    return (counts / counts.sum()).log().float()


def contrastive_loss(
    image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor, rank: int = 0, world_size: int = 1
) -> torch.Tensor:
    """Return CLIP's symmetric InfoNCE over a batch of matched (image, text) pairs (FLYP's fine-tuning loss).

    Embeddings are L2-normalised here; pair i is the positive of row and column i, every other entry of
    the batch a negative (as in FLYP, also the prompts of the same class). With `world_size` > 1 (inside a
    torch.distributed group) the batch is the GLOBAL one: open_clip's ClipLoss gathers every process's
    features with their gradients (`gather_with_grad=True`) and each process computes the loss over all
    pairs (`local_loss=False`), so the value is one process's on the global batch, and DDP's gradient
    average is its gradient (each process's features receive the gradient of every process's loss).
    """
    image_emb = F.normalize(image_emb, dim=-1)
    text_emb = F.normalize(text_emb, dim=-1)
    if world_size > 1:
        from open_clip.loss import ClipLoss

        loss = ClipLoss(local_loss=False, gather_with_grad=True, rank=rank, world_size=world_size)
        return loss(image_emb, text_emb, logit_scale)
    logits = logit_scale * image_emb @ text_emb.t()
    target = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
