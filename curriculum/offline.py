"""Early, quiet answers when model weights are not on this machine (no torch, no model library imported).

Loading a hub model that is neither a local folder nor in the local Hugging Face cache used to mean importing
diffusers/open_clip first and then minutes of download retries (about 24 warnings, each printed twice, before
the one useful line). These helpers ask the cache directly (`huggingface_hub.try_to_load_from_cache`), honour
`HF_HUB_OFFLINE`, and ask the hub once with a short timeout, so a missing model fails in seconds with one line.
This is the one implementation of those checks: `data_generation.hub.load_pretrained` (diffusers, transformers)
and the open_clip loaders of both phases use it; it lives in curriculum/ so Phase 2 may use it too.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

HOW = "download it where the hub is reachable (README.md, 'Models and data'), then pass the folder"


def hub_offline() -> bool:
    """Return True when HF_HUB_OFFLINE is set (a hub lookup then fails at once instead of retrying)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_file_cached(repo_id: str, *filenames: str) -> bool:
    """Return True if any of `filenames` of the hub repo `repo_id` is in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    for name in filenames:
        try:
            if isinstance(try_to_load_from_cache(repo_id, name), str):
                return True
        except Exception:  # an id that is not a valid repo name is simply not cached
            continue
    return False


def hub_unreachable(repo_id: str, timeout: float = 10.0) -> str | None:
    """Return None if the hub answers about `repo_id` within `timeout` s, else why not (one short phrase)."""
    if hub_offline():
        return "it is not in the local Hugging Face cache and HF_HUB_OFFLINE is set"
    try:
        from huggingface_hub import HfApi

        with quiet_hub():
            HfApi().model_info(repo_id, timeout=timeout)
    except Exception as err:
        text = str(err).splitlines()[0] if str(err) else ""
        return (
            f"it is not in the local Hugging Face cache and the model hub did not answer ({type(err).__name__}: {text})"
        )
    return None


#: open_clip's hub repos of the weights DisCL uses (scoring/mining ViT-B-32, FLYP ViT-B-16), so a missing default
#: answers before `import open_clip` (several CPU-seconds: it imports torchvision and more); checked against
#: open_clip's own table by tests/test_offline_errors.py
OPEN_CLIP_HUB = {
    ("ViT-B-32", "openai"): "timm/vit_base_patch32_clip_224.openai",
    ("ViT-B-16", "openai"): "timm/vit_base_patch16_clip_224.openai",
}


def open_clip_hub_repo(name: str, tag: str) -> str | None:
    """Return the hub repo that holds open_clip's `name`/`tag` weights (None for a tag with no hub copy)."""
    if (name, tag) in OPEN_CLIP_HUB:
        return OPEN_CLIP_HUB[(name, tag)]
    import open_clip  # its registry of names and tags only; no model is built

    hub = (open_clip.get_pretrained_cfg(name, tag) or {}).get("hf_hub", "")
    return "/".join(hub.strip("/").split("/")[:2]) or None


def open_clip_tag_missing(name: str, tag: str) -> str | None:
    """Return None if open_clip's `name`/`tag` weights are cached or downloadable now, else why not."""
    repo = open_clip_hub_repo(name, tag)
    if repo is None:
        return None  # a tag served from a plain URL: open_clip's own download reports its failure
    if hub_file_cached(repo, "open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
        return None
    return hub_unreachable(repo)


@contextlib.contextmanager
def quiet_hub() -> Iterator[None]:
    """Silence huggingface_hub's retry warnings and upstream deprecation warnings while loading a model.

    The retries say the same thing two dozen times (twice each when a library has configured the root logger);
    the caller turns the final failure into one line that says what to do.
    """
    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*")
            yield
    finally:
        logger.setLevel(level)
