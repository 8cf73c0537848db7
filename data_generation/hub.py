"""Loading a model from a local folder, the local Hugging Face cache or the hub, written once for every backend.

`load_pretrained` tries, in order: a local folder; the local cache (`local_files_only=True`: no network, no
waiting); the hub, after a ~10 s reachability check, so an unreachable hub fails in seconds with a message that
says how to use a local folder instead of after minutes of retries. `HF_HUB_OFFLINE` stops after the cache.
Given a `cached_file` of the repo, a hub id that is not in the cache is answered from the cache layout alone,
before the model library (diffusers, transformers) is imported. The cache and hub checks themselves live in
`curriculum.offline` (no torch, so Phase 2 and the fast `--help` path use the same ones).
`resolve_dtype` maps `--dtype` to a torch dtype.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch

from curriculum.offline import HOW, hub_file_cached, hub_offline, hub_unreachable, quiet_hub

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


def _missing(flag: str, model_id: str, why: str) -> str:
    """Return the one-line answer for a hub id that cannot be had now: the flag, why, and the local-folder route."""
    return f"{flag} {model_id}: {why}; {HOW} (`hf download {model_id} --local-dir DIR`, then {flag} DIR)"


def load_pretrained(
    model_id: str,
    load: Callable[..., T],
    *,
    kind: str,
    flag: str,
    how: str,
    error: type[Exception] = RuntimeError,
    cached_file: str | None = None,
) -> T:
    """Return `load(**kw)` for `model_id` from a local folder, the local cache or the hub (see the module docstring).

    `load` calls the library's `from_pretrained(model_id, **kw)` (importing the library inside, so a missing
    model answers before the import); it is called with no keyword for a folder, with `local_files_only=True`
    for the cache. `kind` names what is loaded ("a diffusers img2img pipeline"), `flag` the option that gave
    `model_id`, `how` how to get a local copy, `cached_file` a file every copy of the repo has
    ("model_index.json"); failures raise `error` with them, in one line.
    """
    path = Path(model_id)
    if path.is_dir():
        try:
            return load()
        except Exception as err:
            raise error(f"cannot load {kind} from folder {model_id}: {err}") from err
    if path.exists() or model_id.startswith((".", "/", "~")):
        raise error(f"{flag} {model_id!r} is not a folder of {kind} (no such directory)")
    asked = False
    if cached_file is not None and not hub_file_cached(model_id, cached_file):
        missing = hub_unreachable(model_id)  # before the library is imported and retries its downloads
        if missing:
            raise error(_missing(flag, model_id, missing))
        asked = True
    try:  # the local Hugging Face cache first: no network, no waiting
        with quiet_hub():
            return load(local_files_only=True)
    except Exception as err:
        cache_err = err
    if hub_offline():
        why = f"it is not in the local Hugging Face cache and HF_HUB_OFFLINE is set ({type(cache_err).__name__})"
        raise error(_missing(flag, model_id, why))
    if not asked:
        missing = hub_unreachable(model_id)
        if missing:
            raise error(_missing(flag, model_id, missing))
    try:
        with quiet_hub():
            return load()
    except Exception as err:
        text = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise error(f"cannot load {model_id!r} from the hub: {text}. {how}") from err
