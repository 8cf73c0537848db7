"""Several processes: who am I, how many are we, and the few collectives both phases need.

One helper for every command that can run as several processes (gene_img, comp_clip_scores, the Phase 2
trainers). It reads the launcher's variables itself instead of asking accelerate's `PartialState()`, which
reports one process under torchrun on a machine without CUDA:

- torchrun / `accelerate launch --multi_gpu` (and accelerate's MULTI_CPU config): `RANK`, `WORLD_SIZE`,
  `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`;
- SLURM (`srun`, several tasks in one job step): `SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID`; they are
  exported as the torchrun variables so accelerate and torch.distributed see the same world;
- `accelerate launch --cpu --num_processes N` (or without `--multi_gpu` on a machine without GPUs) starts ONE
  process (accelerate's simple launcher) and only leaves `MASTER_ADDR` behind: that is an error here, saying
  how to start N processes, never a silent one-process run.

The process group uses gloo on CPU and NCCL on GPU (`init_process_group`). `--part/--total_parts` (a
SLURM array, several machines) combine with the processes of one launch: part p is split again across the
processes (`split_range`), so the processes of all parts cover the work once.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch


class DistributedSetupError(RuntimeError):
    """The launch asked for several processes but this process cannot join them (the message says why)."""


@dataclass(frozen=True)
class ProcessInfo:
    """This process's place in the launch: `rank` of `world_size`, `local_rank` on its machine, `launcher`
    (single, torchrun, slurm)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launcher: str = "single"

    @property
    def is_main(self) -> bool:
        """Return True for the process that merges and writes shared files (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Return True when there are several processes."""
        return self.world_size > 1

    def global_shard(self, part: int, total_parts: int) -> tuple[int, int]:
        """Return (1-based shard, shard count) of this process: part `part` of `total_parts`, split again into
        `world_size` process shares (shard = (part - 1) * world_size + rank + 1 of total_parts * world_size)."""
        return (part - 1) * self.world_size + self.rank + 1, total_parts * self.world_size

    def device(self, requested: str | None = None) -> str:
        """Return the device this process should use: `requested` if given (a bare 'cuda' becomes
        cuda:LOCAL_RANK when there are several processes), else cuda:LOCAL_RANK when CUDA is there, else cpu."""
        if requested is None:
            requested = "cuda" if torch.cuda.is_available() else "cpu"
        if requested == "cuda" and self.distributed:
            return f"cuda:{self.local_rank}"
        return requested


def _int(env: Mapping[str, str], key: str) -> int:
    try:
        return int(env[key])
    except ValueError:
        raise DistributedSetupError(f"environment variable {key}={env[key]!r} is not an integer") from None


def detect(environ: Mapping[str, str] | None = None) -> ProcessInfo:
    """Return this process's ProcessInfo from the launcher's environment variables (no side effects).

    torchrun's variables win over SLURM's (torchrun inside an sbatch script). SLURM's count only inside an
    `srun` job step (`SLURM_STEP_ID` set): a batch script with `--ntasks 4` that runs python once is one
    process, not rank 0 of 4 waiting for three that never start.
    """
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" in env or "RANK" in env:
        world = _int(env, "WORLD_SIZE") if "WORLD_SIZE" in env else 1
        rank = _int(env, "RANK") if "RANK" in env else 0
        local = _int(env, "LOCAL_RANK") if "LOCAL_RANK" in env else rank
        info = ProcessInfo(rank, world, local, "torchrun" if world > 1 else "single")
    elif "SLURM_PROCID" in env and ("SLURM_STEP_ID" in env or "SLURM_STEPID" in env):
        key = "SLURM_STEP_NUM_TASKS" if "SLURM_STEP_NUM_TASKS" in env else "SLURM_NTASKS"
        world = _int(env, key) if key in env else 1
        rank = _int(env, "SLURM_PROCID")
        local = _int(env, "SLURM_LOCALID") if "SLURM_LOCALID" in env else 0
        info = ProcessInfo(rank, world, local, "slurm" if world > 1 else "single")
    else:
        info = ProcessInfo()
        if "ACCELERATE_USE_CPU" in env and "MASTER_ADDR" in env:
            # accelerate's simple launcher (--cpu, or no --multi_gpu on a machine without GPUs) always sets
            # ACCELERATE_USE_CPU, sets MASTER_ADDR only when --num_processes > 1 (or several machines) was
            # asked for, and then starts a single process without RANK/WORLD_SIZE
            raise DistributedSetupError(
                "`accelerate launch --num_processes N` with --cpu (or without --multi_gpu where there is no GPU) "
                "starts ONE process (accelerate's simple launcher runs a single process unless it is itself "
                "started by mpirun), so this run would silently do all the work in one process. Start N processes "
                "with `torchrun --nproc_per_node N script.py ...` or `accelerate launch --multi_gpu --num_processes "
                "N script.py ...` (on a machine without a GPU it runs on the CPU with gloo); for one process, drop "
                "--num_processes (and unset MASTER_ADDR)."
            )
    if not 0 <= info.rank < info.world_size:
        raise DistributedSetupError(f"rank {info.rank} is outside world size {info.world_size} ({info.launcher})")
    return info


def _export_slurm(info: ProcessInfo, env: os._Environ | dict) -> None:
    """Export a SLURM step's ranks as torchrun's variables (accelerate and torch.distributed read those)."""
    env.setdefault("RANK", str(info.rank))
    env.setdefault("WORLD_SIZE", str(info.world_size))
    env.setdefault("LOCAL_RANK", str(info.local_rank))
    if "MASTER_ADDR" not in env:
        if env.get("SLURM_NNODES", "1") not in ("", "1"):
            raise DistributedSetupError(
                "a SLURM step over several nodes needs MASTER_ADDR: add "
                "`export MASTER_ADDR=$(scontrol show hostnames $SLURM_JOB_NODELIST | head -n 1)` before srun"
            )
        env["MASTER_ADDR"] = "127.0.0.1"
    # one port per job (two jobs sharing a node must not meet on the same port)
    env.setdefault("MASTER_PORT", str(20000 + int(env.get("SLURM_JOB_ID", "0") or 0) % 20000))


def init_process_group(
    backend: str | None = None, timeout: timedelta | None = None, environ: os._Environ | dict | None = None
) -> ProcessInfo:
    """Return this process's ProcessInfo, joining the default torch.distributed group when there are several.

    `backend`: default NCCL when CUDA is available, else gloo (CPU; also right for a barrier between GPU
    processes that only write files). Under SLURM the ranks are first exported as torchrun's variables.
    Idempotent: an already initialised group (e.g. accelerate's) is kept.
    """
    env = os.environ if environ is None else environ
    info = detect(env)
    if not info.distributed:
        return info
    if info.launcher == "slurm":
        _export_slurm(info, env)
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend == "nccl":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(
            backend=backend,
            init_method="env://",
            rank=info.rank,
            world_size=info.world_size,
            timeout=timeout or timedelta(minutes=30),
        )
    return info


def is_initialized() -> bool:
    """Return True when a torch.distributed default group exists."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def barrier() -> None:
    """Wait for every process of the default group (nothing to do without one)."""
    if is_initialized():
        import torch.distributed as dist

        dist.barrier()


def destroy_process_group() -> None:
    """Leave the default group if there is one."""
    if is_initialized():
        import torch.distributed as dist

        dist.destroy_process_group()


def _collective_device() -> torch.device:
    import torch.distributed as dist

    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def gather_rows(local: torch.Tensor) -> torch.Tensor:
    """Return every process's `local` rows concatenated in rank order (on every process, on `local`'s device).

    Shares may differ in length (padded for the collective, trimmed after), so nothing is duplicated or
    dropped: the result is what one process computing all shares in order would hold. Without a group the
    tensor itself is returned.
    """
    if not is_initialized():
        return local
    import torch.distributed as dist

    world = dist.get_world_size()
    if world == 1:
        return local
    dev = _collective_device()
    # every share's shape (an empty share may be (0, 0): it takes the trailing shape of the others)
    shape = torch.tensor(list(local.shape), device=dev, dtype=torch.long)
    shapes = [torch.zeros_like(shape) for _ in range(world)]
    dist.all_gather(shapes, shape)
    sizes = [int(s[0].item()) for s in shapes]
    trailing = next((tuple(int(v) for v in s[1:]) for s in shapes if s[0] > 0), tuple(local.shape[1:]))
    padded = torch.zeros((max(sizes), *trailing), dtype=local.dtype, device=dev)
    if local.shape[0]:
        padded[: local.shape[0]] = local.to(dev)
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([p[:s] for p, s in zip(parts, sizes)]).to(local.device)


def split_range(n: int, rank: int, world_size: int, block: int = 1) -> tuple[int, int]:
    """Return [start, stop) of process `rank`'s contiguous share of n items, in whole blocks of `block` items.

    Shares are disjoint, in rank order, cover 0..n and differ by at most one block. Block-aligned shares keep
    batches identical to one process's (a batch of `block` items never straddles two processes), so batched
    results are the same numbers as one process's.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world size {world_size}")
    blocks = -(-n // block) if block > 0 else n
    base, extra = divmod(blocks, world_size)
    b0 = rank * base + min(rank, extra)
    b1 = b0 + base + (1 if rank < extra else 0)
    return min(n, b0 * block), min(n, b1 * block)


def sharded_rows(n: int, block: int, compute) -> np.ndarray:
    """Return `compute(0, n)` (an array of n rows) as one process computes it, the work shared by the processes
    of the default group: each computes `compute(start, stop)` over its block-aligned share and the shares are
    gathered in order (on every process). Without a group, `compute(0, n)` itself."""
    many = is_initialized() and torch.distributed.get_world_size() > 1
    if not many:
        return np.asarray(compute(0, n))
    start, stop = split_range(n, torch.distributed.get_rank(), torch.distributed.get_world_size(), block=block)
    local = np.asarray(compute(start, stop)) if stop > start else np.zeros((0, 0))
    # gathered as float64 on every process (one dtype for the collective, exact for float16/32); the
    # computed dtype is restored after (an empty share takes float32, what the model outputs give)
    dtype = local.dtype if stop > start else np.float32
    rows = gather_rows(torch.from_numpy(np.ascontiguousarray(local, dtype=np.float64))).numpy()
    return rows.astype(dtype, copy=False)
