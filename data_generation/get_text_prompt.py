"""get_text_prompt.py: diversified per-class prompts from a language model, validated and resumable.

    OPENAI_API_KEY=... python data_generation/get_text_prompt.py --data_csv hard.csv --prompt_json prompts.json
    python data_generation/get_text_prompt.py --data_csv hard.csv --prompt_json prompts.json \
        --backend transformers --model /models/Qwen2.5-1.5B-Instruct

Writes {class name: [prompt, ...]} (the file gene_img.py's --prompt_json reads). Classes already in the file
are skipped; an answer with too few or too short descriptions is asked again, then reported. OpenAI's endpoint
needs the key in $OPENAI_API_KEY (or the variable --api_key_env names): without it the command stops at once
(exit 2). A server at another --api_base (a local OpenAI-compatible server) may need no key.
"""

from __future__ import annotations

import argparse
import logging
import sys

if __package__ in (None, ""):
    import _bootstrap  # type: ignore[import-not-found]

    _bootstrap.ensure_importable()

from curriculum.presets import parse_args  # noqa: E402
from curriculum.tables import TableError, read_class_names, read_sample_table  # noqa: E402
from data_generation.prompting.text_prompts import (
    LANGUAGE_MODELS,
    EndpointRefusedKey,
    EndpointUnreachable,
    MissingAPIKey,
    generate_prompt_file,
)  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Generate the prompt JSON; return 0, 1 if some class got no valid prompts, 2 if the backend cannot start
    (e.g. no API key for OpenAI's endpoint)."""
    p = argparse.ArgumentParser(
        prog="get_text_prompt.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data_csv", required=True, help="sample table whose classes need prompts (any accepted layout)")
    p.add_argument("--prompt_json", required=True, help="output JSON (resumed if it exists)")
    p.add_argument("--class_names", default=None, help="class-name map CSV; default: the table's label names")
    p.add_argument("--backend", default="openai", choices=LANGUAGE_MODELS.names())
    p.add_argument("--model", default=None, help="chat model name (openai) or hub id/folder (transformers)")
    p.add_argument(
        "--api_base",
        default=None,
        help="OpenAI-compatible base URL (default $OPENAI_BASE_URL or OpenAI's); "
        "a server other than OpenAI's may need no key",
    )
    p.add_argument(
        "--api_key_env",
        default="OPENAI_API_KEY",
        help="environment variable holding the API key (required for OpenAI's endpoint; default OPENAI_API_KEY)",
    )
    p.add_argument("--n_prompts", type=int, default=10, help="descriptions per class (default 10)")
    p.add_argument("--min_words", type=int, default=15, help="minimum words per description (default 15)")
    p.add_argument("--hint", default="", help="context for the model, e.g. 'camera-trap photos'")
    p.add_argument("--max_tries", type=int, default=3)
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="ask every class again, even those in an existing --prompt_json made with other settings "
        "(a resume with changed --backend/--model/--n_prompts/--min_words/--hint is refused without it)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds to wait for the server's answer (openai backend; default 60); a server that does not "
        "answer in time stops the run (what is saved is kept)",
    )
    p.add_argument(
        "--templates_file",
        default=None,
        help="template backend: templates with {name} (and {attribute}), a JSON list or one per line",
    )
    p.add_argument(
        "--attributes",
        default=None,
        help="template backend: JSON {class name: [attribute, ...]} ('*' for every other class)",
    )
    args = parse_args(p, argv, "get_text_prompt")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    if args.timeout <= 0:
        p.error(f"--timeout must be > 0, got {args.timeout}")
    try:
        table = read_sample_table(args.data_csv)
        if args.class_names:
            names_map = read_class_names(args.class_names)
            names = [names_map.get(int(y), n) for y, n in zip(table["label"], table["label_name"])]
        else:
            names = table["label_name"].tolist()
    except (TableError, OSError) as err:
        print(f"get_text_prompt: error: {err}", file=sys.stderr)
        return 2
    kwargs = {"model": args.model} if args.model else {}
    if args.backend == "openai":
        kwargs.update(api_base=args.api_base, api_key_env=args.api_key_env, timeout=args.timeout)
    if args.backend == "template":
        kwargs.update(templates=args.templates_file, attributes=args.attributes)
    elif args.templates_file or args.attributes:
        print("get_text_prompt: error: --templates_file/--attributes need --backend template", file=sys.stderr)
        return 2
    try:
        # one backend object per run: a local transformers model is loaded once, on the first class
        ask = LANGUAGE_MODELS.get(args.backend)(**kwargs)
        if hasattr(ask, "load"):
            ask.load()  # a model that cannot be loaded stops the run here, not once per class and try
    except (MissingAPIKey, ValueError, OSError) as err:
        print(f"get_text_prompt: error: {err}", file=sys.stderr)
        return 2
    try:
        run = generate_prompt_file(
            names,
            args.prompt_json,
            ask,
            n=args.n_prompts,
            min_words=args.min_words,
            hint=args.hint,
            max_tries=args.max_tries,
            settings={
                "backend": args.backend,
                "model": args.model,
                "n_prompts": args.n_prompts,
                "min_words": args.min_words,
                "hint": args.hint,
            },
            overwrite=args.overwrite,
        )
    except (EndpointRefusedKey, EndpointUnreachable) as err:
        print(
            f"get_text_prompt: error: {err}; classes finished before it are saved in {args.prompt_json}",
            file=sys.stderr,
        )
        return 2
    except (ValueError, OSError) as err:  # a corrupt existing --prompt_json, an unwritable output folder
        print(f"get_text_prompt: error: {err}", file=sys.stderr)
        return 2
    print(
        f"prompts: {run.written} classes written, {run.skipped_done} already done, {len(run.failed)} failed"
        f" -> {args.prompt_json}"
    )
    for name, why in run.failed.items():
        print(f"  failed: {name}: {why}", file=sys.stderr)
    return 1 if run.failed else 0


if __name__ == "__main__":
    sys.exit(main())
