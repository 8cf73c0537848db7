"""Model-agnostic curriculum maths: prototype difficulty, sampling distributions, pacing and samplers.

Imports neither `data_generation` nor `training`; see curriculum/README.md.

The names below load their submodule on first use (PEP 562), so `import curriculum.registry` or
`curriculum.tables` from a CLI does not import torch before the CLI has parsed its arguments.
"""

from __future__ import annotations

import importlib

# public name -> the submodule that defines it
_LAZY = {
    "DINO_MODELS": "features",
    "PretrainedModelExtractor": "features",
    "create_dino_model": "features",
    "CurriculumLearning": "learning",
    "create_curriculum_learning": "learning",
    "create_curriculum_learning_with_dino": "learning",
    "PACING": "pacing",
    "PatiencePacing": "pacing",
    "pacing_fraction": "pacing",
    "progress": "pacing",
    "KMEANS": "prototypes",
    "SCALINGS": "prototypes",
    "Prototypes": "prototypes",
    "assign": "prototypes",
    "fit_prototypes": "prototypes",
    "scale_distances": "prototypes",
    "CurriculumSampler": "samplers",
    "HardPacingSchedule": "schedules",
    "SoftPacingSchedule": "schedules",
    "StaticSchedule": "schedules",
    "hard_subset": "schedules",
    "CurriculumState": "state",
    "load_curriculum_state": "state",
    "save_curriculum_state": "state",
    "MODES": "weighting",
    "TemperatureTable": "weighting",
    "effective_size": "weighting",
    "max_effective_size": "weighting",
    "sampling_probabilities": "weighting",
    "temperature_for": "weighting",
    "warmup_target": "weighting",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    """Return the public name `name`, importing its submodule on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'curriculum' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
