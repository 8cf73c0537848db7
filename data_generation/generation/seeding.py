"""Stable per-(sample_id, seed) random seeds.

DisCL seeded each image with `hash(prompt) ^ seed`; Python's `hash` of a string changes with every process
(PYTHONHASHSEED), and the 64-bit value crashed numpy. A cryptographic hash of the pair is stable across
processes, machines and shard layouts.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def stable_seed(sample_id: str, seed: int) -> int:
    """Return a 63-bit seed derived from `(sample_id, seed)`, identical in every process and machine."""
    digest = hashlib.sha256(f"{sample_id}\x00{int(seed)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def make_generator(sample_id: str, seed: int) -> torch.Generator:
    """Return a CPU `torch.Generator` seeded with `stable_seed(sample_id, seed)`.

    CPU generators give the same noise on every machine; diffusers moves the noise to the pipeline device.
    """
    import torch  # here, not at the top: plan.py (and so --help) needs only stable_seed

    return torch.Generator("cpu").manual_seed(stable_seed(sample_id, seed))
