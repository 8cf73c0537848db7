"""The names and defaults Phase 2's argument parsers show, importable without torch, timm or open_clip.

`--help` and argument errors must answer in about 2 s, so a parser cannot import the registries that live
beside torch code to learn their names. These are the registries' names and the config defaults, written out;
tests/test_cli_startup.py asserts each equals its source, so a change there fails the test until it is made here.
"""

from __future__ import annotations

from types import SimpleNamespace

#: training.trainers.losses.LOSSES (train_lt.py --loss)
LOSS_NAMES = ("balanced_softmax", "ce")
#: training.trainers.flyp.ACTIVATIONS (finetune_flyp.py --activation)
ACTIVATION_NAMES = ("auto", "quickgelu", "gelu")
#: training.trainers.classifier.AUGMENTATIONS (train_lt.py --augment)
AUGMENTATION_NAMES = ("timm", "shift", "none")
#: curriculum.timestep.TIMESTEP_SAMPLERS (train_diffusion.py --t_sampler)
TIMESTEP_SAMPLER_NAMES = ("curriculum", "soft", "stages", "uniform")
#: curriculum.sparsity.SPARSITY_VARIANTS (train_diffusion.py --sparsity)
SPARSITY_NAMES = ("c", "cr", "cs", "group_l1", "mask", "none")
#: curriculum.sparsity.REGROWTH_MODES (train_diffusion.py --regrowth)
REGROWTH_NAMES = ("gradient", "random")
#: training.diffusion.trainer.LOSS_WEIGHTINGS (train_diffusion.py --loss_weighting)
LOSS_WEIGHTING_NAMES = ("none", "min_snr")

#: the defaults of training.diffusion.trainer.DiffusionTrainConfig that train_diffusion.py's flags show
DIFFUSION_DEFAULTS = SimpleNamespace(
    image_size=16,
    block_out_channels=(32, 64, 64),
    layers_per_block=1,
    norm_num_groups=8,
    t_sampler="stages",
    stage_starts=(0.8, 0.6, 0.4, 0.2, 0.0),
    stage_epochs=(5, 10, 15, 20, 30),
    soft_kappa=4.0,
    loss_weighting="none",
    snr_gamma=5.0,
    sparsity="none",
    sparsity_start=0.8,
    regrowth="gradient",
    cr_lambda_max=5e-05,
    num_train_timesteps=1000,
    beta_schedule="linear",
    batch_size=64,
    learning_rate=1e-3,
    weight_decay=0.0,
    max_grad_norm=1.0,
    ema_decay=0.999,
    p_uncond=0.1,
    sample_steps=25,
    sample_guidance=2.0,
    samples_per_class=4,
    seed=0,
    keep_checkpoints=2,
)
