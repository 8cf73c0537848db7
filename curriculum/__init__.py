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
from .weighting import (MODES, TemperatureTable, effective_size, max_effective_size, sampling_probabilities,
                        temperature_for, warmup_target)

__all__ = [
    "CurriculumLearning", "PretrainedModelExtractor", "create_curriculum_learning",
    "create_curriculum_learning_with_dino", "create_dino_model", "DINO_MODELS",
    "fit_prototypes", "scale_distances", "assign", "Prototypes", "KMEANS", "SCALINGS",
    "sampling_probabilities", "effective_size", "max_effective_size", "temperature_for", "TemperatureTable",
    "warmup_target", "MODES",
    "PACING", "pacing_fraction", "progress", "PatiencePacing",
    "SoftPacingSchedule", "HardPacingSchedule", "StaticSchedule", "hard_subset", "CurriculumSampler",
    "CurriculumState", "save_curriculum_state", "load_curriculum_state",
]
