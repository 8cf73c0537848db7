"""Model-agnostic curriculum maths: prototype difficulty, sampling distributions, pacing and samplers.

Imports neither `data_generation` nor `training`; see curriculum/README.md.
"""

from .features import DINO_MODELS, PretrainedModelExtractor, create_dino_model
from .learning import CurriculumLearning, create_curriculum_learning, create_curriculum_learning_with_dino
from .pacing import PACING, PatiencePacing, pacing_fraction, progress
from .prototypes import KMEANS, SCALINGS, Prototypes, assign, fit_prototypes, scale_distances
from .samplers import CurriculumSampler
from .schedules import HardPacingSchedule, SoftPacingSchedule, StaticSchedule, hard_subset
from .state import CurriculumState, load_curriculum_state, save_curriculum_state
from .weighting import (
    MODES,
    TemperatureTable,
    effective_size,
    max_effective_size,
    sampling_probabilities,
    temperature_for,
    warmup_target,
)

__all__ = [
    "DINO_MODELS",
    "KMEANS",
    "MODES",
    "PACING",
    "SCALINGS",
    "CurriculumLearning",
    "CurriculumSampler",
    "CurriculumState",
    "HardPacingSchedule",
    "PatiencePacing",
    "PretrainedModelExtractor",
    "Prototypes",
    "SoftPacingSchedule",
    "StaticSchedule",
    "TemperatureTable",
    "assign",
    "create_curriculum_learning",
    "create_curriculum_learning_with_dino",
    "create_dino_model",
    "effective_size",
    "fit_prototypes",
    "hard_subset",
    "load_curriculum_state",
    "max_effective_size",
    "pacing_fraction",
    "progress",
    "sampling_probabilities",
    "save_curriculum_state",
    "scale_distances",
    "temperature_for",
    "warmup_target",
]
