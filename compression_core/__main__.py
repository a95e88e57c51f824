"""Command line: ``python -m compression_core run recipe.json [--out DIR]``.

Runs the same job as a Condense worker and prints the result as JSON.
``python -m compression_core algorithms`` lists the registered algorithms.
"""

from __future__ import annotations

import argparse
import json
import sys

from .algorithms import all_algorithms, markdown_table
from .jobs import Recipe, run_job


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m compression_core")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a job recipe (JSON file)")
    run.add_argument("recipe")
    run.add_argument("--out", help="output folder (overrides the recipe's output_dir)")
    listing = commands.add_parser("algorithms", help="list registered algorithms")
    listing.add_argument("--markdown", action="store_true", help="print the README's table")
    args = parser.parse_args(argv)

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
        result = run_job(recipe, progress=lambda f, msg: print(f"[{f:4.0%}] {msg}", file=sys.stderr))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    json.dump(result.to_dict(), sys.stdout, indent=2, default=str)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
