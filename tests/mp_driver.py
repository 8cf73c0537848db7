"""Run a DisCL CLI as one process of a torchrun launch, recording what this process did (for
tests/test_multiprocess.py; not a test module).

    python -m torch.distributed.run --nproc_per_node 2 tests/mp_driver.py gene_img RECORD_DIR -- <gene_img flags>
    python -m torch.distributed.run --nproc_per_node 2 tests/mp_driver.py flyp RECORD_DIR CLIP_CFG_DIR [sgd] -- <flags>
    python -m torch.distributed.run --nproc_per_node 2 tests/mp_driver.py train_lt RECORD_DIR [sgd] -- <flags>

Each process writes RECORD_DIR/rank{RANK}.json: its exit code and, for gene_img, every diffusers pipeline
call (the sample ids and strength of its images); for the trainers, every training loss value. The CLI runs
unchanged through its `main(argv)`; only the training augmentation is replaced by the eval transform (FLYP's
open_clip train transform crops at random, which no two launches can share), and with `sgd` the optimizer is
plain SGD (Adam divides each gradient by its own size, so on a parameter whose gradient is mathematically zero,
like an attention key bias, it turns float noise into learning-rate-sized steps of random sign).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


class CountingPipe:
    """A diffusers pipeline proxy that counts its calls (every other attribute is the pipeline's)."""

    def __init__(self, pipe, calls: list):
        self.__dict__["_pipe"], self.__dict__["_calls"] = pipe, calls

    def __getattr__(self, name):
        return getattr(self._pipe, name)

    def __call__(self, *args, **kwargs):
        self._calls.append(len(kwargs["generator"]))
        return self._pipe(*args, **kwargs)


def run_gene_img(argv: list[str], record: dict) -> int:
    from data_generation import gene_img
    from data_generation.generation import generate

    orig_load = generate.load_generator
    record["pipeline_calls"], record["batches"] = [], []

    def load_counting(*args, **kwargs):
        gen = orig_load(*args, **kwargs)
        gen.pipe = CountingPipe(gen.pipe, record["pipeline_calls"])
        orig_generate = gen.generate

        def generate_and_record(batch):
            record["batches"].append({"sample_ids": list(batch.image_keys), "strength": batch.strength})
            return orig_generate(batch)

        gen.generate = generate_and_record
        return gen

    generate.load_generator = load_counting
    return gene_img.main(argv)


def _record_losses(task_cls, record: dict) -> None:
    orig = task_cls.training_loss

    def training_loss(self, model, images, labels, **kw):  # kw: FLYP's item rows
        loss = orig(self, model, images, labels, **kw)
        record["losses"].append(float(loss.detach()))
        return loss

    task_cls.training_loss = training_loss


def run_flyp(argv: list[str], clip_cfg: str, record: dict) -> int:
    import open_clip

    from training import finetune_flyp
    from training.trainers import flyp

    open_clip.add_model_config(clip_cfg)
    orig_load = flyp.load_open_clip

    def load_without_augmentation(*args, **kwargs):
        model, _train_tf, eval_tf, tok = orig_load(*args, **kwargs)
        return model, eval_tf, eval_tf, tok

    flyp.load_open_clip = load_without_augmentation
    record["losses"] = []
    _record_losses(flyp.FLYPTask, record)
    return finetune_flyp.main(argv)


def run_train_lt(argv: list[str], record: dict) -> int:
    from training import train_lt
    from training.trainers import classifier

    record["losses"] = []
    _record_losses(classifier.ClassifierTask, record)
    return train_lt.main(argv)


def main() -> int:
    """Dispatch to one CLI; write this process's record; return its exit code."""
    sep = sys.argv.index("--")
    head, argv = sys.argv[1:sep], sys.argv[sep + 1 :]
    mode, out = head[0], Path(head[1])
    if head[-1] == "sgd":
        import torch

        torch.optim.AdamW = torch.optim.Adam = torch.optim.SGD
        head = head[:-1]
    record: dict = {"rank": int(os.environ.get("RANK", "0")), "world_size": int(os.environ.get("WORLD_SIZE", "1"))}
    if mode == "gene_img":
        rc = run_gene_img(argv, record)
    elif mode == "flyp":
        rc = run_flyp(argv, head[2], record)
    elif mode == "train_lt":
        rc = run_train_lt(argv, record)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    record["rc"] = rc
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank{record['rank']}.json").write_text(json.dumps(record))
    return rc


if __name__ == "__main__":
    sys.exit(main())
