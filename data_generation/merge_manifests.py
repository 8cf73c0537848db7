"""merge_manifests.py: merge the shard manifests of a generation folder into manifest.parquet.

python data_generation/merge_manifests.py --output_path runs/syn
"""

from __future__ import annotations

import argparse
import sys

if __package__ in (None, ""):
    import _bootstrap  # type: ignore[import-not-found]

    _bootstrap.ensure_importable()

from curriculum.presets import parse_args  # noqa: E402
from data_generation.generation.merge import merge_manifests  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Merge the manifests; return the exit code (1 if shards are missing and --strict)."""
    p = argparse.ArgumentParser(
        prog="merge_manifests.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--output_path", required=True, help="the generation output folder")
    p.add_argument("--strict", action="store_true", help="exit 1 if a shard of some layout is missing")
    args = parse_args(p, argv, "merge_manifests")
    try:
        res = merge_manifests(args.output_path)
    except (ValueError, OSError) as err:  # no shards, an unreadable shard, a shard without synthetic_id
        print(f"merge_manifests: error: {err}", file=sys.stderr)
        return 2
    print(f"{res.path}: {res.rows} rows from {res.parts} shard manifest(s)")
    if res.missing_parts:
        print(f"missing: {', '.join(res.missing_parts)}", file=sys.stderr)
        return 1 if args.strict else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
