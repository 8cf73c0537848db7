"""Fault injection over the CLIs (issue 16): an unwritable output (a path below a regular file, which fails even
for root), corrupt config.json / state.json. Prints each CLI's exit code and the last stderr line; a
"TRACEBACK" entry is an exception that escaped main().

    PYTHONPATH=$PWD HF_HUB_OFFLINE=1 python benchmarks/fault_injection.py /tmp/faults
"""

import contextlib
import io
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

root = Path(sys.argv[1])
root.mkdir(parents=True)  # a new folder: the script writes (and breaks) files in it
blocker = root / "afile"
blocker.write_text("x")
bad_out = blocker / "sub"
imgs = root / "imgs"
imgs.mkdir()
rows = []
rng = np.random.default_rng(0)
for i in range(12):
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(imgs / f"{i}.png")
    rows.append(
        {
            "sample_id": f"s{i}",
            "filepath": f"imgs/{i}.png",
            "label": i % 2,
            "label_name": ["cat", "dog"][i % 2],
            "split": "train" if i < 8 else "val",
        }
    )
table = root / "t.csv"
pd.DataFrame(rows).to_csv(table, index=False)


def run(name, fn, argv):
    err = io.StringIO()
    out = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            rc = fn(argv)
    except SystemExit as e:
        rc = f"SystemExit({e.code})"
    except BaseException as e:
        rc = f"TRACEBACK {type(e).__name__}: {e}"
    last = (err.getvalue().strip().splitlines() or [""])[-1][:200]
    print(f"{name:40s} rc={rc} | {last}")


from data_generation import get_text_prompt, inspect_scores, make_table, merge_manifests, mine_hard, train_probe  # noqa: E402
from training import train_diffusion, train_lt  # noqa: E402

R = str(root)
run(
    "mine_hard unwritable out",
    mine_hard.main,
    [
        "--dataset",
        "table",
        "--data",
        str(table),
        "--data_root",
        R,
        "--scorers",
        "random",
        "--output_csv",
        str(bad_out / "h.csv"),
        "--scores_parquet",
        str(bad_out / "s.parquet"),
    ],
)
run(
    "make_table unwritable out",
    make_table.main,
    ["--dataset", "table", "--data", str(table), "--data_root", R, "--out", str(bad_out / "t.parquet")],
)
run("merge_manifests unwritable", merge_manifests.main, ["--output_path", str(bad_out)])
run(
    "get_text_prompt unwritable",
    get_text_prompt.main,
    [
        "--data_csv",
        str(table),
        "--prompt_json",
        str(bad_out / "p.json"),
        "--backend",
        "openai",
        "--api_base",
        "http://127.0.0.1:9",
        "--timeout",
        "0.2",
    ],
)
run("inspect_scores dir", inspect_scores.main, ["--scores", R])
run(
    "train_probe unwritable",
    train_probe.main,
    ["--data", str(table), "--data_root", R, "--out", str(bad_out / "probe"), "--epochs", "1", "--no_progress"],
)
run(
    "train_lt unwritable run_dir",
    train_lt.main,
    [
        "--data_table",
        str(table),
        "--data_root",
        R,
        "--run_dir",
        str(bad_out / "run"),
        "--arch",
        "resnet10t",
        "--img_size",
        "32",
        "--epochs",
        "1",
        "--eval_splits",
        "val",
        "--composition",
        "mixed",
        "--num_workers",
        "0",
        "--device",
        "cpu",
    ],
)
run(
    "train_diffusion unwritable",
    train_diffusion.main,
    [
        "--data",
        str(table),
        "--data_root",
        R,
        "--output_dir",
        str(bad_out / "d"),
        "--image_size",
        "16",
        "--stage_starts",
        "0.5",
        "0.0",
        "--stage_epochs",
        "1",
        "1",
        "--no_progress",
        "--device",
        "cpu",
    ],
)
# corrupt state.json / config.json in a used run dir
run_dir = root / "run"
run(
    "train_lt ok 1 epoch",
    train_lt.main,
    [
        "--data_table",
        str(table),
        "--data_root",
        R,
        "--run_dir",
        str(run_dir),
        "--arch",
        "resnet10t",
        "--img_size",
        "32",
        "--epochs",
        "2",
        "--epochs_per_invocation",
        "1",
        "--eval_splits",
        "val",
        "--composition",
        "mixed",
        "--num_workers",
        "0",
        "--device",
        "cpu",
    ],
)
(run_dir / "config.json").write_text("{")
run(
    "train_lt corrupt config.json",
    train_lt.main,
    [
        "--data_table",
        str(table),
        "--data_root",
        R,
        "--run_dir",
        str(run_dir),
        "--arch",
        "resnet10t",
        "--img_size",
        "32",
        "--epochs",
        "2",
        "--eval_splits",
        "val",
        "--composition",
        "mixed",
        "--num_workers",
        "0",
        "--device",
        "cpu",
        "--resume",
    ],
)
(run_dir / "metrics.csv").write_bytes(b"\x00\xff")
# the same tiny diffusion run, first trained, then resumed on a corrupted state.json
d2_argv = [
    "--data",
    str(table),
    "--data_root",
    R,
    "--output_dir",
    str(root / "d2"),
    "--image_size",
    "16",
    "--stage_starts",
    "0.5",
    "0.0",
    "--stage_epochs",
    "1",
    "1",
    "--no_progress",
    "--device",
    "cpu",
]
run(
    "train_diffusion corrupt state",
    train_diffusion.main,
    [*d2_argv, "--stop_after_epoch", "1"],
)
for st in (root / "d2" / "checkpoints").glob("epoch-*/state.json"):
    st.write_text("{")
run(
    "train_diffusion resume corrupt",
    train_diffusion.main,
    d2_argv,
)
