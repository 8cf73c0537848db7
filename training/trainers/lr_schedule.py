"""Cosine learning-rate decay with linear warm-up over the optimizer steps a run actually takes.

FLYP's schedule: `warmup` steps rising linearly to the base LR, then
lr_k = base · ½(1 + cos(π·(k − warmup)/(total − warmup))), so the LR reaches its minimum at the last step.
`total` must be the true number of optimizer steps, and an epoch's length depends on what it is composed of
(real + a level's synthetic images, or the long-tail subset). The engine therefore tells the schedule, at the
start of every epoch, how many optimizer steps remain in the run (this epoch's exactly, later epochs from
their composed item counts). When every epoch's length is known in advance (a fixed guidance schedule, or no
curriculum) this is exactly the formula above over the exact total. Under the adaptive schedule a future
curriculum epoch's length depends on the level chosen then, so the remaining count is an estimate until the
curriculum is over; the decay then continues from where it is, at the rate that ends it at the last remaining
step, so the LR never jumps and still reaches its minimum at the last step of the run.
"""

from __future__ import annotations

import math

import torch


class WarmupCosine:
    """Warm-up then cosine decay of every param group's LR, re-planned per epoch (see the module docstring).

    Not a torch LRScheduler: its position is (optimizer steps taken, cosine progress), both JSON-able, so a
    checkpoint restores it exactly. `step()` after each optimizer step; `plan(remaining)` at each epoch start.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_steps: int):
        self.optimizer = optimizer
        self.warmup_steps = max(0, int(warmup_steps))
        self.base_lrs = [float(g["lr"]) for g in optimizer.param_groups]
        self.steps_taken = 0
        # progress of the cosine (0 at the end of warm-up, 1 after the last step) is anchor_progress plus
        # rate per post-warm-up step taken since anchor_step
        self.anchor_step, self.anchor_progress, self.rate = 0, 0.0, 0.0
        self._apply()

    @property
    def progress(self) -> float:
        """Return the fraction of the cosine decay done before the next step (0..1)."""
        done = max(0, self.steps_taken - max(self.anchor_step, self.warmup_steps))
        return min(1.0, self.anchor_progress + self.rate * done)

    def factor(self) -> float:
        """Return the LR multiplier of the next optimizer step."""
        if self.steps_taken < self.warmup_steps:
            return (self.steps_taken + 1) / self.warmup_steps
        return 0.5 * (1.0 + math.cos(math.pi * self.progress))

    def plan(self, remaining_steps: int) -> None:
        """Spread the rest of the decay evenly over the run's `remaining_steps` optimizer steps."""
        progress = self.progress
        after_warmup = int(remaining_steps) - max(0, self.warmup_steps - self.steps_taken)
        self.anchor_step, self.anchor_progress = self.steps_taken, progress
        self.rate = (1.0 - progress) / after_warmup if after_warmup > 0 else 0.0
        self._apply()

    def step(self) -> None:
        """Count one optimizer step and set the LR of the next one."""
        self.steps_taken += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        """Return the LR of each param group for the next step."""
        return [float(g["lr"]) for g in self.optimizer.param_groups]

    def _apply(self) -> None:
        f = self.factor()
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * f

    def state_dict(self) -> dict:
        """Return the JSON-able position (steps taken, cosine anchor and rate, base LRs)."""
        return {
            "warmup_steps": self.warmup_steps,
            "base_lrs": list(self.base_lrs),
            "steps_taken": self.steps_taken,
            "anchor_step": self.anchor_step,
            "anchor_progress": self.anchor_progress,
            "rate": self.rate,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore the position written by `state_dict` and set the LR accordingly."""
        if "steps_taken" not in state:
            raise ValueError("the checkpoint's LR scheduler state is not a WarmupCosine state (an older run?)")
        self.warmup_steps = int(state["warmup_steps"])
        self.base_lrs = [float(x) for x in state["base_lrs"]]
        self.steps_taken = int(state["steps_taken"])
        self.anchor_step, self.anchor_progress = int(state["anchor_step"]), float(state["anchor_progress"])
        self.rate = float(state["rate"])
        self._apply()
