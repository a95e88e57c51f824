"""Command line: ``python -m compression_core run recipe.json [--out DIR]``.

Runs the same job as a Condense worker and prints the result as JSON; a job
that fails prints one sentence (``error: ...``, exit status 2), and with
``--traceback`` the traceback before it.
``python -m compression_core algorithms`` lists the registered algorithms;
``python -m compression_core intake`` inspects one upload under a budget (what the workers run).
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback

from .algorithms import all_algorithms, markdown_table
from .jobs import Recipe, explain_failure, run_job
from .jobs.sandbox import intake_child


def _print_progress(fraction: float, message: str, detail: dict | None = None) -> None:
    """One line per report on stderr, with the estimate of the time left once the job has one."""
    eta = (detail or {}).get("eta_s")
    left = f" (about {eta:.0f} s left)" if eta else ""
    print(f"[{fraction:4.0%}] {message}{left}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m compression_core")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a job recipe (JSON file)")
    run.add_argument("recipe")
    run.add_argument("--out", help="output folder (overrides the recipe's output_dir)")
    run.add_argument("--traceback", action="store_true", help="on failure, print the traceback after the sentence")
    intake = commands.add_parser("intake", help="inspect an upload (a JSON request on stdin) under a budget; "
                                 "the web side's workers run this")
    for option, default in (("--memory-mb", 3072), ("--cpu-s", 300), ("--file-mb", 4096), ("--threads", 1)):
        intake.add_argument(option, type=int, default=default)
    listing = commands.add_parser("algorithms", help="list registered algorithms")
    listing.add_argument("--markdown", action="store_true", help="print the README's table")
    args = parser.parse_args(argv)

    if args.command == "intake":
        return intake_child(args.memory_mb, args.cpu_s, args.file_mb, args.threads)
    if args.command == "algorithms":
        if args.markdown:
            print(markdown_table())
            return 0
        for spec in all_algorithms():
            print(f"{spec.name:28} {spec.kind.value:13} {spec.description}")
        return 0

    with open(args.recipe) as handle:
        data = json.load(handle)
    if args.out:
        data["output_dir"] = args.out
    try:
        recipe = Recipe.from_dict(data)
        result = run_job(recipe, progress=_print_progress)
    except Exception as exc:  # noqa: BLE001 - a failed job is one sentence; --traceback shows the rest
        if args.traceback:
            traceback.print_exc(file=sys.stderr)
        print(f"error: {explain_failure(exc)}", file=sys.stderr)
        return 2
    json.dump(result.to_dict(), sys.stdout, indent=2, default=str)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
