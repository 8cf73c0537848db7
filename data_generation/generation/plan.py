"""Pure planning for generation: hard samples x strengths x text guidance x seeds -> planned rows.

Nothing here touches a model or writes a file, so sharding, naming and prompts are unit-testable.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from curriculum.contracts import MANIFEST_COLUMNS, synthetic_id, variant_dirname
from curriculum.images import UnsafeNameError, class_folder_name, safe_component
from data_generation.generation.seeding import stable_seed

DEFAULT_STRENGTHS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
DEFAULT_TEXT_GUIDANCE = (10.0,)
DEFAULT_SEEDS = (10, 20, 30, 40, 42, 50, 60, 70)
IWILDCAM_TEMPLATE = "a photo of {name} in the wild"
DEFAULT_TEMPLATE = "a photo of a {name}."


def shard_bounds(n: int, part: int, total_parts: int) -> tuple[int, int]:
    """Return [start, stop) of 1-based `part` of `total_parts` over n items.

    Parts are contiguous, disjoint, cover 0..n and differ in size by at most one.
    """
    if total_parts < 1:
        raise ValueError(f"--total_parts must be >= 1, got {total_parts}")
    if not 1 <= part <= total_parts:
        raise ValueError(f"--part must be in 1..{total_parts} (1-based), got {part}")
    base, extra = divmod(n, total_parts)
    i = part - 1
    start = i * base + min(i, extra)
    return start, start + base + (1 if i < extra else 0)


def process_bounds(n: int, part: int, total_parts: int, rank: int = 0, world_size: int = 1) -> tuple[int, int]:
    """Return [start, stop) of process `rank`'s share of 1-based `part` of `total_parts` over n items.

    The part (`shard_bounds`) is split again into `world_size` contiguous shares, so the processes of a part
    cover exactly that part, whatever their number, and all parts' processes cover 0..n once.
    """
    start, stop = shard_bounds(n, part, total_parts)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"process rank {rank} is outside world size {world_size}")
    s, e = shard_bounds(stop - start, rank + 1, world_size)
    return start + s, start + e


def target_size(
    src_width: int, src_height: int, width: int | None, height: int | None, multiple: int, max_side: int = 1024
) -> tuple[int, int]:
    """Return the output (width, height), both multiples of `multiple`.

    Given both sides, they are used (rounded down to the multiple). Given one side, the other keeps the
    source aspect. Given neither, the source size is kept, scaled down so the longer side is <= `max_side`.
    """
    if width is None and height is None:
        scale = min(1.0, max_side / max(src_width, src_height))
        width, height = src_width * scale, src_height * scale
    elif width is None:
        width = height * src_width / src_height
    elif height is None:
        height = width * src_height / src_width
    # the epsilon keeps 400/796*796 = 399.99999 from flooring a whole multiple away
    w = max(multiple, int(math.floor(width / multiple + 1e-6)) * multiple)
    h = max(multiple, int(math.floor(height / multiple + 1e-6)) * multiple)
    return w, h


def class_prompt_name(label: int, label_name: str, class_names: Mapping[int, str] | None) -> str:
    """Return the name used in prompts: the map's entry for `label` if a map is given, else `label_name`.

    Raises KeyError when a map is given but has no entry (the caller counts it as a failure).
    """
    if class_names is not None:
        if int(label) not in class_names:
            raise KeyError(f"label {label} ({label_name!r}) has no name in the class-name map")
        return class_names[int(label)]
    if not label_name:
        raise KeyError(f"label {label} has no label_name and no --class_names map was given")
    return label_name


def choose_prompt(
    sample_id: str, seed: int, name: str, template: str, prompt_lists: Mapping[str, Sequence[str]] | None
) -> str:
    """Return the prompt of one variant: a per-class list entry chosen by the stable seed, else the template."""
    if prompt_lists and prompt_lists.get(name):
        options = prompt_lists[name]
        return str(options[stable_seed(sample_id, seed) % len(options)])
    return template.format(name=name)


@dataclass(frozen=True)
class PlanFailure:
    """A sample that cannot be planned: its `sample_id` and the `reason` (naming the sample and what is wrong)."""

    sample_id: str
    reason: str


def plan_variants(
    samples: pd.DataFrame,
    strengths: Sequence[float],
    text_guidances: Sequence[float],
    seeds: Sequence[int],
    prompt_template: str,
    class_names: Mapping[int, str] | None = None,
    prompt_lists: Mapping[str, Sequence[str]] | None = None,
    suffix: str = ".jpg",
    class_names_source: str | None = None,
) -> tuple[pd.DataFrame, list[PlanFailure]]:
    """Return (planned variants, failures) for the samples of one shard.

    One row per (sample, strength, text guidance, seed) with the manifest's identity columns plus
    `source_path`; `path` is relative to the output folder; width/height/model columns are filled when the
    image is generated. Samples whose class or image name is unsafe, or whose class has no prompt name,
    become failures, not rows; each reason names the sample (its table row's `sample_id`), and for a label
    missing from the map the label, its name in the table and the map file (`class_names_source`).
    """
    rows, failures = [], []
    for s in samples.itertuples(index=False):
        try:
            # the folder stands for the class; the manifest keeps the real name (label_name)
            class_dir = class_folder_name(s.label_name or str(s.label))
            image_file = safe_component(str(s.sample_id), "image name") + suffix
            name = class_prompt_name(s.label, s.label_name, class_names)
        except (UnsafeNameError, KeyError) as err:
            reason = str(err).strip("'\"")
            if isinstance(err, KeyError) and class_names is not None and class_names_source:
                reason += f" {class_names_source}"
            failures.append(PlanFailure(str(s.sample_id), f"sample {s.sample_id!r}: {reason}"))
            continue
        for strength in strengths:
            for g in text_guidances:
                for seed in seeds:
                    rows.append(
                        {
                            "synthetic_id": synthetic_id(s.sample_id, strength, g, seed),
                            "sample_id": s.sample_id,
                            "label": int(s.label),
                            "label_name": s.label_name,
                            "prompt": choose_prompt(s.sample_id, seed, name, prompt_template, prompt_lists),
                            "strength": float(strength),
                            "image_guidance": round(1.0 - float(strength), 6),
                            "text_guidance": float(g),
                            "seed": int(seed),
                            # relative to the output folder, so a folder can be moved or merged
                            "path": f"{class_dir}/{variant_dirname(strength, g, seed)}/{image_file}",
                            "filepath": s.filepath,
                            "source_path": s.source_path,
                        }
                    )
    cols = [c for c in MANIFEST_COLUMNS if c not in {"model_id", "steps", "width", "height"}] + ["source_path"]
    return pd.DataFrame(rows, columns=cols), failures
