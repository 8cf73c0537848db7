"""make_table.py: write a dataset's sample table (every split) to CSV/Parquet, the file Phase 2 reads.

python data_generation/make_table.py --dataset iwildcam --data data/ --out iwildcam.parquet
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    import _bootstrap  # type: ignore[import-not-found]

    _bootstrap.ensure_importable()

# the parser needs only names; the loaders (data_generation.mining imports torch) are imported after parsing
from curriculum.presets import parse_args  # noqa: E402
from curriculum.tables import write_csv, write_parquet  # noqa: E402
from data_generation.cli_names import DATASET_NAMES  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Write the table; return the exit code."""
    p = argparse.ArgumentParser(
        prog="make_table.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dataset", required=True, choices=DATASET_NAMES)
    p.add_argument("--data", required=True, help="table file / image folder / WILDS root / ImageNet-LT list file")
    p.add_argument("--data_root", default=None)
    p.add_argument("--train_list", default=None)
    p.add_argument(
        "--download", action="store_true", help="iwildcam: let WILDS download iWildCam v2.0 into --data (about 11 GB)"
    )
    p.add_argument("--out", required=True, help=".parquet or .csv")
    args = parse_args(p, argv, "make_table")
    inputs = [x for x in (args.data, args.train_list) if x]
    if any(Path(x).resolve() == Path(args.out).resolve() for x in inputs):
        print(f"make_table: error: --out {args.out} is the input table itself; write to another file", file=sys.stderr)
        return 2
    from data_generation.mining.datasets import load_dataset

    try:
        df = load_dataset(args.dataset, args.data, args.data_root, train_list=args.train_list, download=args.download)
    except (ValueError, OSError) as err:
        print(f"make_table: error: {err}", file=sys.stderr)
        return 2
    out = df.drop(columns=["source_path"])
    meta = {
        "dataset": args.dataset,
        "data_root": df.attrs.get("data_root"),
        "layout": df.attrs.get("layout"),
        "preset": args.preset_record,
    }
    try:
        (write_parquet(out, args.out, meta) if args.out.endswith(".parquet") else write_csv(out, args.out))
    except OSError as err:
        print(f"make_table: error: --out {args.out}: cannot write ({err})", file=sys.stderr)
        return 2
    print(f"{args.out}: {len(out)} samples; relative paths resolve against --data_root {df.attrs.get('data_root')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
