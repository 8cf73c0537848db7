"""A model that is not on this machine fails with one line naming the flag and the local-folder route.

Offline (HF_HUB_OFFLINE=1) and with an unreachable hub alike: no download retries, no retry warnings, and no
model library imported before the answer.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from curriculum import offline

REPO = Path(__file__).resolve().parent.parent
ROUTE = "download it where the hub is reachable"


def _offline(monkeypatch, value: bool) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", value)


def test_open_clip_tag_offline_is_one_line_naming_the_flags(monkeypatch, caplog):
    from data_generation.scoring.backends import ScorerLoadError, load_scorer

    _offline(monkeypatch, True)
    with caplog.at_level(logging.WARNING), pytest.raises(ScorerLoadError) as info:
        load_scorer("open_clip", "ViT-B-32", pretrained="openai")
    msg = str(info.value)
    assert "\n" not in msg and "--clip_pretrained openai" in msg and "HF_HUB_OFFLINE" in msg
    assert ROUTE in msg and "then pass the folder" in msg and "--clip_model DIR" in msg
    assert "timm/vit_base_patch32_clip_224.openai" in msg  # the repo to download
    assert not [r for r in caplog.records if r.name.startswith("huggingface_hub")]


def test_unreachable_hub_is_asked_once_without_retry_warnings(monkeypatch, caplog):
    """HF_HUB_OFFLINE unset and no network: one short model_info call, not open_clip's download retries."""
    from huggingface_hub import HfApi

    from data_generation.scoring.backends import ScorerLoadError, load_scorer

    _offline(monkeypatch, False)
    calls = []

    def no_network(self, repo_id, timeout=None, **kw):
        calls.append((repo_id, timeout))
        logging.getLogger("huggingface_hub.utils._http").warning("Retrying in 1s [Retry 1/5].")
        raise ConnectionError("[Errno -2] Name or service not known")

    monkeypatch.setattr(HfApi, "model_info", no_network)
    with caplog.at_level(logging.WARNING), pytest.raises(ScorerLoadError) as info:
        load_scorer("open_clip", "ViT-B-32", pretrained="openai")
    assert calls == [("timm/vit_base_patch32_clip_224.openai", 10.0)]
    msg = str(info.value)
    assert "did not answer (ConnectionError" in msg and ROUTE in msg and "\n" not in msg
    assert not [r for r in caplog.records if r.name.startswith("huggingface_hub")]  # silenced while asking


def test_cached_file_is_found_without_the_network(tmp_path, monkeypatch):
    """hub_file_cached reads the cache layout only (a snapshot file under models--org--name)."""
    cache = tmp_path / "hub"
    snap = cache / "models--org--m" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    (snap / "model_index.json").write_text("{}")
    (cache / "models--org--m" / "refs").mkdir()
    (cache / "models--org--m" / "refs" / "main").write_text("abc")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    from huggingface_hub import file_download

    monkeypatch.setattr(file_download, "HF_HUB_CACHE", str(cache), raising=False)
    assert offline.hub_file_cached("org/m", "model_index.json")
    assert not offline.hub_file_cached("org/m", "config.json")
    assert not offline.hub_file_cached("not a repo id!", "config.json")


def test_gene_img_offline_model_fails_before_importing_diffusers(tmp_path):
    code = f"""
import contextlib, io, json, sys
from data_generation import gene_img
err = io.StringIO()
with contextlib.redirect_stderr(err):
    rc = gene_img.main(["--data_csv", {str(REPO / "assets" / "sample_iwildcam.csv")!r}, "--data_root", {str(REPO)!r},
                        "--output_path", {str(tmp_path / "o")!r}, "--no_progress"])
print(json.dumps({{"rc": rc, "err": err.getvalue(), "diffusers": "diffusers" in sys.modules}}))
"""
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["rc"] == 2 and not res["diffusers"]
    lines = [line for line in res["err"].splitlines() if line.strip()]
    assert len(lines) == 1, res["err"]
    assert lines[0].startswith("gene_img: error: --model_id stabilityai/stable-diffusion-xl-refiner-1.0: ")
    assert ROUTE in lines[0] and "--model_id DIR" in lines[0]


def test_the_static_open_clip_repos_equal_open_clips_table():
    import open_clip

    for (name, tag), repo in offline.OPEN_CLIP_HUB.items():
        hub = open_clip.get_pretrained_cfg(name, tag)["hf_hub"]
        assert repo == "/".join(hub.strip("/").split("/")[:2])


def test_flyp_default_weights_offline_fail_before_importing_open_clip():
    code = """
import json, sys
from training.trainers.flyp import load_open_clip
try:
    load_open_clip("ViT-B-16", "openai")
except RuntimeError as err:
    print(json.dumps({"err": str(err), "open_clip": "open_clip" in sys.modules}))
"""
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert not res["open_clip"] and "--model ViT-B-16 --pretrained openai" in res["err"] and ROUTE in res["err"]
    assert "timm/vit_base_patch16_clip_224.openai" in res["err"] and "\n" not in res["err"]
