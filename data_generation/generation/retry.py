"""The reference's in-loop CLIP check of ImageNet-LT generation, as an option of gene_img.

After each generated image, the reference computed the CLIP cosine of the image with "a photo of {class}"; while it
was <= 0.30 and fewer than 6 attempts had been made, it drew another description and generated again, keeping the
attempt with the highest similarity (even if still below the threshold). Here the same loop runs per batch: the
items below the threshold are generated again together, attempt k with the class's description number
(stable_seed + k) and the noise of `make_generator(f"{sample_id}#retry{k}", seed)`, so the result does not depend
on batching or on the order of a run (the reference's retries consumed global RNG state).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from curriculum.images import to_pil
from data_generation.generation.backends import GenerationBatch, ImageGenerator
from data_generation.generation.seeding import make_generator, stable_seed


@dataclass
class ClipRetry:
    """The check: a loaded CLIP `scorer` (data_generation.scoring.backends), the `threshold` the cosine must exceed,
    the most `max_attempts` per image (first one included) and the text each image is compared with."""

    scorer: object
    threshold: float = 0.30
    max_attempts: int = 6
    text_template: str = "a photo of {name}"
    counts: dict = field(default_factory=lambda: {"checked": 0, "retried": 0, "generations": 0, "below": 0})

    def similarities(self, arrays: Sequence[np.ndarray], names: Sequence[str]) -> np.ndarray:
        """Return the cosine of each image with its class's text."""
        img = self.scorer.embed_images([to_pil(a) for a in arrays])
        txt = self.scorer.embed_texts([self.text_template.format(name=n) for n in names])
        return np.sum(np.asarray(img, dtype=np.float64) * np.asarray(txt, dtype=np.float64), axis=1)


def alternative_prompt(
    sample_id: str,
    seed: int,
    attempt: int,
    name: str,
    first: str,
    prompt_lists: Mapping[str, Sequence[str]] | None,
    prefix: str,
) -> str:
    """Return attempt k's prompt: the class's description number stable_seed + k (with the prefix), or the first
    prompt again when the class has no descriptions (then only the noise differs)."""
    options = (prompt_lists or {}).get(name)
    if not options:
        return first
    return prefix + str(options[(stable_seed(sample_id, seed) + attempt) % len(options)])


def generate_checked(
    generator: ImageGenerator,
    batch: GenerationBatch,
    rows: Sequence[dict],
    names: Sequence[str],
    retry: ClipRetry,
    prompt_lists: Mapping[str, Sequence[str]] | None,
    prefix: str,
) -> tuple[list[np.ndarray], list[str]]:
    """Return (images, the prompt each was made with) for `batch`, regenerating the items whose CLIP similarity is
    <= the threshold up to `retry.max_attempts` times and keeping each item's best attempt."""
    arrays = list(generator.generate(batch))
    prompts = list(batch.prompts)
    sims = retry.similarities(arrays, names)
    retry.counts["checked"] += len(arrays)
    retry.counts["generations"] += len(arrays)
    for attempt in range(1, retry.max_attempts):
        todo = [i for i in range(len(arrays)) if sims[i] <= retry.threshold]
        if not todo:
            break
        retry.counts["retried"] += len(todo) if attempt == 1 else 0
        new_prompts = [
            alternative_prompt(
                rows[i]["sample_id"], rows[i]["seed"], attempt, names[i], prompts[i], prompt_lists, prefix
            )
            for i in todo
        ]
        sub = GenerationBatch(
            images=[batch.images[i] for i in todo],
            image_keys=[batch.image_keys[i] for i in todo],
            prompts=new_prompts,
            generators=[make_generator(f"{rows[i]['sample_id']}#retry{attempt}", rows[i]["seed"]) for i in todo],
            strength=batch.strength,
            text_guidance=batch.text_guidance,
            steps=batch.steps,
            labels=[batch.labels[i] for i in todo] if batch.labels is not None else None,
        )
        out = generator.generate(sub)
        retry.counts["generations"] += len(out)
        new_sims = retry.similarities(out, [names[i] for i in todo])
        for j, i in enumerate(todo):
            if new_sims[j] > sims[i]:
                arrays[i], sims[i], prompts[i] = out[j], new_sims[j], new_prompts[j]
    retry.counts["below"] += int(np.sum(sims <= retry.threshold))
    return arrays, prompts
