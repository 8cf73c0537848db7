"""Execute a generation plan: validate, shard, skip what is done, batch, write atomically, keep a manifest.

`run_generation(GenerationConfig(...))` is what `gene_img.py` calls; tests call it directly.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from curriculum.contracts import MANIFEST_COLUMNS, shard_failures_name, shard_manifest_name, shard_manifests
from curriculum.distributed import ProcessInfo, detect
from curriculum.images import (
    SourceImageError,
    UnsafeNameError,
    ensure_inside,
    image_size,
    is_readable_image,
    load_rgb,
    looks_complete,
    resize_to,
    save_image_atomic,
    to_pil,
)
from curriculum.tables import read_class_names, read_sample_table, write_csv, write_parquet
from data_generation.generation.backends import GenerationBatch, ImageGenerator, load_generator
from data_generation.generation.plan import (
    DEFAULT_SEEDS,
    DEFAULT_STRENGTHS,
    DEFAULT_TEMPLATE,
    DEFAULT_TEXT_GUIDANCE,
    IWILDCAM_TEMPLATE,
    plan_variants,
    process_bounds,
    shard_bounds,
    target_size,
)
from data_generation.generation.seeding import make_generator

log = logging.getLogger(__name__)

DEFAULT_MODEL_ID = "stabilityai/stable-diffusion-xl-refiner-1.0"


@dataclass
class GenerationConfig:
    """Everything one generation run needs (the flags of gene_img.py)."""

    data_csv: str
    output_path: str
    data_root: str | None = None
    part: int = 1
    total_parts: int = 1
    model_id: str = DEFAULT_MODEL_ID
    generator: str | None = None
    strengths: Sequence[float] = DEFAULT_STRENGTHS
    text_guidance: Sequence[float] = DEFAULT_TEXT_GUIDANCE
    seeds: Sequence[int] = DEFAULT_SEEDS
    steps: int = 50
    width: int | None = None
    height: int | None = None
    max_side: int = 1024
    batch_size: int = 8
    dtype: str | None = None
    device: str | None = None
    prompt_template: str | None = None
    #: put before every prompt (the reference's ImageNet-LT "a 8k real photo: ")
    prompt_prefix: str = ""
    class_names: str | None = None
    prompt_json: str | None = None
    strict: bool = False
    #: regenerate every variant of this shard even when an image made with other settings exists
    overwrite: bool = False
    images_per_chunk: int = 64
    jpeg_quality: int = 95
    flush_every: int = 20
    progress: bool = True
    #: the --preset record (name, file, sha256, overrides), kept in the manifest metadata
    preset: dict | None = None
    #: the reference's in-loop CLIP check (ImageNet-LT): off without a model (data_generation/generation/retry.py)
    retry_clip_model: str | None = None
    retry_clip_backend: str = "transformers"
    retry_threshold: float = 0.30
    retry_attempts: int = 6
    retry_text_template: str = "a photo of {name}"

    def validate(self) -> None:
        """Raise ValueError naming the flag for settings that cannot work."""
        if not self.strengths or any(not 0.0 < s <= 1.0 for s in self.strengths):
            raise ValueError(f"--strengths must be in (0, 1], got {list(self.strengths)}")
        if not self.text_guidance or any(g < 0 for g in self.text_guidance):
            raise ValueError(f"--text_guidance must be >= 0, got {list(self.text_guidance)}")
        if not self.seeds:
            raise ValueError("--seeds needs at least one seed")
        if self.steps < 1:
            raise ValueError(f"--steps must be >= 1, got {self.steps}")
        weakest = min(self.strengths)
        if int(self.steps * weakest) < 1:
            raise ValueError(
                f"--steps {self.steps} with strength {weakest} runs int({self.steps}*{weakest}) = 0 denoising steps; "
                f"use --steps >= {int(1 / weakest) + 1} or a larger strength"
            )
        if self.batch_size < 1:
            raise ValueError(f"--batch_size must be >= 1, got {self.batch_size}")
        for flag, v in (("--width", self.width), ("--height", self.height)):
            if v is not None and v < 8:
                raise ValueError(f"{flag} must be >= 8, got {v}")
        shard_bounds(0, self.part, self.total_parts)
        if self.prompt_template is not None:
            check_template(self.prompt_template)
        if self.retry_clip_model and (self.retry_attempts < 1 or "{name}" not in self.retry_text_template):
            raise ValueError("--retry_attempts must be >= 1 and --retry_text_template needs a {name} placeholder")


@dataclass
class GenerationSummary:
    """What a run did: counts, failure reasons and the files it wrote."""

    planned: int = 0
    generated: int = 0
    skipped_done: int = 0
    failed: int = 0
    failure_reasons: Counter = field(default_factory=Counter)
    manifest_path: str | None = None
    failures_path: str | None = None
    seconds: float = 0.0
    shard: str = ""

    def line(self) -> str:
        """Return the one-line end-of-run summary."""
        rate = self.generated / self.seconds if self.seconds > 0 else 0.0
        reasons = "; ".join(f"{k} x{v}" for k, v in self.failure_reasons.most_common())
        return (
            f"[{self.shard}] generated {self.generated}, skipped as done {self.skipped_done}, failed {self.failed}"
            f" of {self.planned} planned in {self.seconds:.1f}s ({rate:.2f} img/s)"
            + (f"; failures: {reasons}" if reasons else "")
        )


def process_shard(part: int, total_parts: int, process: ProcessInfo | None = None) -> tuple[int, int]:
    """Return the effective (part, total): under several processes (torchrun, accelerate, srun) each process
    takes a share of the part, named as shard (part - 1) * world + rank + 1 of total * world."""
    return (process or detect()).global_shard(part, total_parts)


def _short_reason(message: str) -> str:
    """Collapse a failure message to a reason category for the summary counts."""
    for key in (
        "missing source image",
        "unreadable source image",
        "not a safe file name",
        "no name in the class-name map",
        "no label_name",
        "generation error",
    ):
        if key in message:
            return key
    return message.split(":")[0][:60]


def load_prompt_lists(path: str | None) -> dict[str, list[str]] | None:
    """Return `{class name: [prompt, ...]}` from a JSON file (None if no path)."""
    if not path:
        return None
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"--prompt_json {path}: cannot read it as JSON ({err})") from None
    if not isinstance(data, dict) or not all(
        isinstance(v, list) and all(isinstance(p, str) for p in v) for v in data.values()
    ):
        raise ValueError(f"{path}: --prompt_json must map each class name to a list of prompt strings")
    return data


def check_template(template: str) -> str:
    """Return `template` if it formats with `{name}` (the class name) and nothing else; else raise ValueError."""
    if "{name}" not in template:
        raise ValueError(f"--prompt_template {template!r} has no {{name}}: every prompt would lack the class name")
    try:
        template.format(name="x")
    except (KeyError, IndexError, ValueError) as err:
        raise ValueError(f"--prompt_template {template!r}: only {{name}} may be a field ({err!r})") from None
    return template


#: the settings that determine an image besides its row (sample, strength, guidance, seed, prompt); an image is
#: done only when it was made with the same values (recorded in every shard manifest's metadata)
IMAGE_SETTINGS = ("model_id", "generator", "dtype", "steps", "width", "height", "max_side", "jpeg_quality")


def image_settings(cfg: GenerationConfig) -> dict:
    """Return the IMAGE_SETTINGS of `cfg` (dtype resolved to what the device runs: fp16 on GPU, fp32 on CPU)."""
    out = {k: getattr(cfg, k) for k in IMAGE_SETTINGS}
    out["dtype"] = cfg.dtype or _default_dtype(detect().device(cfg.device))
    return out


def check_same_settings(out: Path, plan: pd.DataFrame, settings: dict) -> None:
    """Return None when every shard manifest in `out` was made with `settings` and the plan's prompts; else raise
    ValueError naming the flags that changed (old -> new) and the way out (--overwrite or a new --output_path).

    A manifest of an older version records its flags in `config` only; those are compared (dtype as given).
    An unreadable manifest is an error naming it.
    """
    from curriculum.tables import read_parquet_metadata

    planned = dict(zip(plan["synthetic_id"], plan["prompt"]))
    changed: dict[str, tuple] = {}
    for f in shard_manifests(out):
        try:
            meta = read_parquet_metadata(f)
            rows = pd.read_parquet(f, columns=["synthetic_id", "prompt"])
        except Exception as err:  # pyarrow raises several types; the user needs the file
            raise ValueError(f"{f}: cannot read this shard manifest ({err}); move it away and rerun") from None
        old = meta.get("settings") or {k: v for k, v in meta.get("config", {}).items() if k in IMAGE_SETTINGS}
        for k, v in old.items():
            if k in settings and v != settings[k] and not (k == "dtype" and "settings" not in meta and v is None):
                changed.setdefault(f"--{k}", (v, settings[k]))
        for sid, prompt in zip(rows["synthetic_id"], rows["prompt"]):
            if sid in planned and planned[sid] != prompt:
                changed.setdefault(
                    "the prompt (--prompt_template, --class_names or --prompt_json)",
                    (f"{prompt!r} for {sid}", repr(planned[sid])),
                )
                break
    if changed:
        what = "; ".join(
            f"{k} {a!r} -> {b!r}" if k.startswith("--") else f"{k} {a} -> {b}" for k, (a, b) in changed.items()
        )
        raise ValueError(
            f"--output_path {out}: its images were made with other settings ({what}); "
            "use a new --output_path, rerun with the recorded settings, or pass --overwrite to regenerate them"
        )


def default_template(layout: str) -> str:
    """Return the default prompt template for a sample-table layout."""
    return IWILDCAM_TEMPLATE if layout == "iwildcam" else DEFAULT_TEMPLATE


def run_generation(
    cfg: GenerationConfig,
    generator: ImageGenerator | None = None,
    on_batch: Callable[[int], None] | None = None,
    process: ProcessInfo | None = None,
) -> GenerationSummary:
    """Generate the variants of this shard that are not done yet; return the summary.

    `generator` injects a loaded backend (tests, the benchmark); otherwise it is loaded from `cfg.model_id`
    only if there is work to do. `on_batch(n_written)` is called after each batch (used to test kills).
    `process` (default: from the launcher's environment, curriculum.distributed.detect) picks this process's
    share of the part: a contiguous range of the part's images, disjoint from the other processes'.
    """
    # 1. check inputs and take this process's shard of the sample table
    t0 = time.perf_counter()
    cfg.validate()
    samples = read_sample_table(cfg.data_csv, cfg.data_root)
    process = process or detect()
    part, total = process_shard(cfg.part, cfg.total_parts, process)
    # the part's image range, split again across the processes (all processes of all parts: each image once)
    start, stop = process_bounds(len(samples), cfg.part, cfg.total_parts, process.rank, process.world_size)
    shard = samples.iloc[start:stop]
    out = Path(cfg.output_path)
    out.mkdir(parents=True, exist_ok=True)
    shard_name = f"part {part}/{total}"
    if process.distributed:
        shard_name += f" (part {cfg.part}/{cfg.total_parts}, process {process.rank + 1}/{process.world_size})"
    summary = GenerationSummary(shard=shard_name)

    # 2. plan the variants (sample x strength x text guidance x seed); a sample that cannot be planned fails
    names = read_class_names(cfg.class_names) if cfg.class_names else None
    template = cfg.prompt_template or default_template(samples.attrs.get("layout", "canonical"))
    prompt_lists = load_prompt_lists(cfg.prompt_json)
    plan, plan_failures = plan_variants(
        shard,
        cfg.strengths,
        cfg.text_guidance,
        cfg.seeds,
        template,
        names,
        prompt_lists,
        class_names_source=cfg.class_names,
    )
    if cfg.prompt_prefix and len(plan):
        plan["prompt"] = cfg.prompt_prefix + plan["prompt"].astype(str)
    for f in plan_failures[:5]:
        log.warning("%s: %s", cfg.data_csv, f.reason)
    if len(plan_failures) > 5:
        log.warning("... %d more samples that cannot be planned (listed in the failures CSV)", len(plan_failures) - 5)
    per_sample = len(cfg.strengths) * len(cfg.text_guidance) * len(cfg.seeds)
    # one failure row per sample (the reason); the summary counts the variants it costs
    failures: list[dict] = [{"sample_id": f.sample_id, "synthetic_id": "", "reason": f.reason} for f in plan_failures]
    summary.planned = len(plan) + per_sample * len(plan_failures)
    summary.failed = per_sample * len(plan_failures)
    for f in plan_failures:
        summary.failure_reasons[_short_reason(f.reason)] += per_sample

    # 3. resume: the done variants must have been made with these settings (else refused, naming them, unless
    # --overwrite); folders resolving outside --output_path are counted failures; which variants are done already
    settings = image_settings(cfg)
    if cfg.overwrite:
        log.warning("--overwrite: every variant of %s is generated again", summary.shard)
    else:
        check_same_settings(out, plan, settings)
    plan = _drop_outside_folders(out, plan, failures, summary)
    done_mask = _done_variants(out, plan, part, total, overwrite=cfg.overwrite)
    plan["done"] = done_mask
    summary.skipped_done = int(sum(done_mask))

    # 4. the manifest: the done variants now, each generated one as it is written; `flush` writes the file
    records: dict[str, dict] = {}
    model_desc: dict = {}

    def record(row, width: int, height: int, model_id: str) -> None:
        rec = {c: row[c] for c in MANIFEST_COLUMNS if c in row}
        rec.update(model_id=model_id, steps=cfg.steps, width=width, height=height)
        records[row["synthetic_id"]] = rec

    for row in plan[plan["done"]].to_dict("records"):
        w, h = image_size(out / row["path"])
        record(row, w, h, cfg.model_id)

    def flush() -> None:
        manifest = pd.DataFrame(list(records.values()), columns=MANIFEST_COLUMNS).sort_values("synthetic_id")
        meta = {
            "config": {k: v for k, v in asdict(cfg).items()},
            "settings": settings,
            "generator": model_desc,
            "shard": [part, total],
        }
        summary.manifest_path = str(write_parquet(manifest, out / shard_manifest_name(part, total), meta))

    # 5. generate the rest, chunk of source images by chunk, one batch per (strength, guidance, size)
    todo = plan[~plan["done"]]
    if len(todo):
        if generator is None:
            device = process.device(cfg.device)  # cuda:LOCAL_RANK under several processes
            generator = load_generator(
                cfg.model_id, device=device, dtype=cfg.dtype or _default_dtype(device), name=cfg.generator
            )
        model_desc = generator.describe()
        model_id = getattr(generator, "model_id", cfg.model_id)
        retry = None
        if cfg.retry_clip_model:
            from data_generation.generation.retry import ClipRetry
            from data_generation.scoring.backends import load_scorer

            scorer = load_scorer(cfg.retry_clip_backend, cfg.retry_clip_model, device=process.device(cfg.device))
            retry = ClipRetry(scorer, cfg.retry_threshold, cfg.retry_attempts, cfg.retry_text_template)
            model_desc = {**model_desc, "clip_retry": {"scorer": scorer.describe(), "threshold": cfg.retry_threshold}}
        # the settings are on disk before the first image: a run killed before its first manifest flush still
        # tells a rerun with other settings that the images in this folder were made with these
        flush()
        # Seed-independent work once per image: each source is decoded and resized once (per chunk, below),
        # and a backend that caches per-image work (the VAE posterior) keeps a whole chunk's images, so an
        # image is encoded once for all its strengths x guidance scales x seeds.
        if hasattr(generator, "keep_images"):
            generator.keep_images(cfg.images_per_chunk)
        bar = tqdm(total=len(todo), desc=f"gene_img {summary.shard}", unit="img", disable=not cfg.progress)
        n_batches = 0
        sample_ids = list(dict.fromkeys(todo["sample_id"]))
        for c0 in range(0, len(sample_ids), cfg.images_per_chunk):
            chunk_ids = set(sample_ids[c0 : c0 + cfg.images_per_chunk])
            chunk = todo[todo["sample_id"].isin(chunk_ids)]
            sources: dict[str, object] = {}
            for sid, src in chunk.groupby("sample_id", sort=False)["source_path"].first().items():
                try:
                    img = load_rgb(src)
                    w, h = target_size(*img.size, cfg.width, cfg.height, generator.size_multiple, cfg.max_side)
                    sources[sid] = resize_to(img, w, h)
                except SourceImageError as err:
                    n = int((chunk["sample_id"] == sid).sum())
                    failures.append({"sample_id": sid, "synthetic_id": "", "reason": str(err)})
                    summary.failed += n
                    summary.failure_reasons[_short_reason(str(err))] += n
                    bar.update(n)
            groups: dict[tuple, list[dict]] = defaultdict(list)
            for row in chunk.to_dict("records"):
                if row["sample_id"] in sources:
                    img = sources[row["sample_id"]]
                    groups[(row["strength"], row["text_guidance"], img.size)].append(row)
            for (strength, g, _size), rows in groups.items():
                for b0 in range(0, len(rows), cfg.batch_size):
                    batch_rows = rows[b0 : b0 + cfg.batch_size]
                    batch = GenerationBatch(
                        images=[sources[r["sample_id"]] for r in batch_rows],
                        image_keys=[r["sample_id"] for r in batch_rows],
                        prompts=[r["prompt"] for r in batch_rows],
                        generators=[make_generator(r["sample_id"], r["seed"]) for r in batch_rows],
                        strength=float(strength),
                        text_guidance=float(g),
                        steps=cfg.steps,
                        labels=[int(r["label"]) for r in batch_rows],
                    )
                    try:
                        if retry is None:
                            arrays = generator.generate(batch)
                        else:
                            from data_generation.generation.plan import class_prompt_name
                            from data_generation.generation.retry import generate_checked

                            row_names = [class_prompt_name(r["label"], r["label_name"], names) for r in batch_rows]
                            arrays, used = generate_checked(
                                generator, batch, batch_rows, row_names, retry, prompt_lists, cfg.prompt_prefix
                            )
                            for r, prompt in zip(batch_rows, used):
                                r["prompt"] = prompt  # the manifest records the attempt that was kept
                    except (RuntimeError, ValueError) as err:
                        if cfg.strict:
                            raise
                        msg = f"generation error: {type(err).__name__}: {err}"
                        log.error("batch of %d at strength %s failed: %s", len(batch_rows), strength, msg)
                        for r in batch_rows:
                            failures.append(
                                {"sample_id": r["sample_id"], "synthetic_id": r["synthetic_id"], "reason": msg}
                            )
                        summary.failed += len(batch_rows)
                        summary.failure_reasons["generation error"] += len(batch_rows)
                        bar.update(len(batch_rows))
                        continue
                    for r, arr in zip(batch_rows, arrays):
                        try:
                            save_image_atomic(to_pil(arr), out / r["path"], quality=cfg.jpeg_quality)
                        except OSError as err:  # a full disk, a read-only folder: keep what is done, then stop
                            try:
                                flush()
                            except OSError:
                                pass  # the images are on disk; the next run finds them by decoding
                            raise OSError(
                                f"cannot write {out / r['path']} ({err.strerror or err}); the {len(records)} "
                                "image(s) done so far are kept: fix the cause and rerun to resume"
                            ) from err
                        record(r, arr.shape[1], arr.shape[0], model_id)
                    summary.generated += len(batch_rows)
                    bar.update(len(batch_rows))
                    n_batches += 1
                    if n_batches % cfg.flush_every == 0:
                        flush()
                    if on_batch is not None:
                        on_batch(summary.generated)
        bar.close()
        if retry is not None:
            c = retry.counts
            log.info(
                "CLIP check: %d images checked, %d regenerated (%d generations in all), %d still <= %.2f after "
                "%d attempts (kept: their best attempt)",
                c["checked"],
                c["retried"],
                c["generations"],
                c["below"],
                cfg.retry_threshold,
                cfg.retry_attempts,
            )
            model_desc["clip_retry"]["counts"] = dict(c)
            flush()

    # 6. write the manifest and the failures
    flush()
    if failures:
        fail_path = out / shard_failures_name(part, total)
        summary.failures_path = str(write_csv(pd.DataFrame(failures), fail_path))
    summary.seconds = time.perf_counter() - t0
    return summary


def _drop_outside_folders(out: Path, plan: pd.DataFrame, failures: list[dict], summary) -> pd.DataFrame:
    """Return `plan` without the variants whose folder resolves outside `out` (a symlinked class folder): they
    are never written to nor cleaned, but counted as failures like any other unsafe name (added to `failures`
    and `summary`)."""
    outside: set[Path] = set()
    for folder in {(out / p).parent for p in plan["path"]}:
        try:
            ensure_inside(out, folder / "x")
        except UnsafeNameError as err:
            outside.add(folder)
            log.error("%s", err)
    if not outside:
        return plan
    bad = plan["path"].map(lambda p: (out / p).parent in outside).to_numpy()
    for sid, synth, p in zip(plan["sample_id"][bad], plan["synthetic_id"][bad], plan["path"][bad]):
        reason = f"{out / p} is not a safe file name: its folder resolves outside --output_path {out}"
        failures.append({"sample_id": sid, "synthetic_id": synth, "reason": reason})
    summary.failed += int(bad.sum())
    summary.failure_reasons["not a safe file name"] += int(bad.sum())
    return plan[~bad].reset_index(drop=True)


def _done_variants(out: Path, plan: pd.DataFrame, part: int, total: int, overwrite: bool = False) -> list[bool]:
    """Return, per planned variant, whether its image under `out` is done (a resumed run skips it; none with
    `overwrite`).

    Temporary files of a killed run (atomic writes: `.{name}.*.tmp`) never count as done; this shard's own
    ones are removed (`.{its image}.*.tmp`, its manifest's and failures CSV's): shards share class folders, and
    another shard's temporary file may be in flight. Rows the shard's previous manifest recorded were written
    atomically: they must exist and be complete (JPEG start and end markers: two small reads, no decoding). Any
    other file (written after the last manifest flush, or by another tool) must decode fully. This keeps a
    resume over hundreds of thousands of images from decoding each of them again.
    """
    files_by_folder: dict[Path, set[str]] = defaultdict(set)
    for p in plan["path"]:
        files_by_folder[(out / p).parent].add(Path(p).name)
    for folder, names in files_by_folder.items():
        for stale in folder.glob(".*.tmp") if folder.is_dir() else ():
            if stale.name[1:].rsplit(".", 2)[0] in names:
                stale.unlink(missing_ok=True)
    previous = out / shard_manifest_name(part, total)
    for own in (previous.name, shard_failures_name(part, total)):
        for stale in out.glob(f".{own}.*.tmp"):
            stale.unlink(missing_ok=True)
    if overwrite:
        return [False] * len(plan)
    recorded: set[str] = set()
    if previous.is_file():
        try:
            recorded = set(pd.read_parquet(previous, columns=["synthetic_id"])["synthetic_id"])
        except Exception as err:  # an unreadable manifest only costs the fast path
            log.warning("%s: cannot read the previous manifest (%s); checking every image", previous, err)
    return [
        looks_complete(out / p) if sid in recorded else is_readable_image(out / p)
        for sid, p in zip(plan["synthetic_id"], plan["path"])
    ]


def _default_dtype(device: str) -> str:
    return "fp32" if str(device).startswith("cpu") else "fp16"
