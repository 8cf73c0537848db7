"""Loading a model from a local folder, the local Hugging Face cache or the hub, written once for every backend.

`load_pretrained` tries, in order: a local folder; the local cache (`local_files_only=True`: no network, no
waiting); the hub, after a ~10 s reachability check, so an unreachable hub fails in seconds with a message that
says how to use a local folder instead of after minutes of retries. `HF_HUB_OFFLINE` stops after the cache.
`resolve_dtype` maps `--dtype` to a torch dtype.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch

log = logging.getLogger(__name__)

T = TypeVar("T")

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def resolve_dtype(dtype: str | None, device: str) -> torch.dtype:
    """Return the torch dtype for `--dtype` (default fp16 on GPU, fp32 on CPU; half on the CPU -> fp32)."""
    on_cpu = str(device).startswith("cpu")
    if dtype is None:
        return torch.float32 if on_cpu else torch.float16
    if dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if on_cpu and dtype != "fp32":
        log.warning("--dtype %s on the CPU: using fp32 (half precision is slow or unsupported there)", dtype)
        return torch.float32
    return DTYPES[dtype]


def hub_offline() -> bool:
    """Return True when HF_HUB_OFFLINE is set (a hub lookup then fails at once instead of retrying)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def check_hub_reachable(repo_id: str, how: str, error: type[Exception] = RuntimeError) -> None:
    """Raise `error` within ~10 s if the model hub cannot be asked about `repo_id`; `how` says what to do instead."""
    try:
        from huggingface_hub import HfApi

        HfApi().model_info(repo_id, timeout=10)
    except Exception as err:
        raise error(
            f"cannot load {repo_id!r}: the model hub did not answer ({type(err).__name__}: {err}). {how}"
        ) from err


def load_pretrained(
    model_id: str, load: Callable[..., T], *, kind: str, flag: str, how: str, error: type[Exception] = RuntimeError
) -> T:
    """Return `load(**kw)` for `model_id` from a local folder, the local cache or the hub (see the module docstring).

    `load` calls the library's `from_pretrained(model_id, **kw)`; it is called with no keyword for a folder,
    with `local_files_only=True` for the cache. `kind` names what is loaded ("a diffusers img2img pipeline"),
    `flag` the option that gave `model_id`, `how` how to get a local copy; failures raise `error` with them.
    """
    path = Path(model_id)
    if path.is_dir():
        try:
            return load()
        except Exception as err:
            raise error(f"cannot load {kind} from folder {model_id}: {err}") from err
    if path.exists() or model_id.startswith((".", "/", "~")):
        raise error(f"{flag} {model_id!r} is not a folder of {kind} (no such directory)")
    try:  # the local Hugging Face cache first: no network, no waiting
        return load(local_files_only=True)
    except Exception as err:
        cache_err = err
    if hub_offline():
        raise error(
            f"cannot load {model_id!r}: it is not in the local Hugging Face cache and HF_HUB_OFFLINE is set "
            f"({type(cache_err).__name__}). {how}"
        )
    check_hub_reachable(model_id, how, error)
    try:
        return load()
    except Exception as err:
        raise error(f"cannot load {model_id!r} from the hub: {err}. {how}") from err
