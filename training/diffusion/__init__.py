"""Diffusion training with a timestep curriculum and channel sparsity (the offline generator of the demo).

CLI: `training/train_diffusion.py`; library: `trainer` (the loop, schedulers, Min-SNR weighting), `data` (pixel image
datasets), `channel_mask` (CS masks and CR group-L1), `checkpoint`, `eval` (sample quality judge).
"""
