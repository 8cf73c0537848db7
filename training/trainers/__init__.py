"""Phase 2 — curriculum training on real + synthetic data: FLYP fine-tuning of CLIP and long-tail classifiers.

CLIs: `training/finetune_flyp.py`, `training/train_lt.py`; library: `data` (real and synthetic item tables),
`runs` (building a run: data, schedule, prototype sampler), `engine` (the one training loop), `flyp` and `classifier`
(the two tasks), `losses`, `metrics`, `lr_schedule`, `checkpoint`, `cli` (the flags both CLIs share).
"""
