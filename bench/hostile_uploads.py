"""Hostile-upload benchmark (issue 13): what each hostile file costs the web worker and the inspecting worker,
before (inspection inside the web request) and after (stored by the request, inspected in a budgeted child).

    .venv/bin/python bench/hostile_uploads.py --before-engine 17df0e5   # about 4 min on 2 cores
    .venv/bin/python bench/hostile_uploads.py                           # every case, this checkout's engine
    .venv/bin/python bench/hostile_uploads.py --quick                   # skips the slowest 'before' runs
    .venv/bin/python bench/hostile_uploads.py --cases control,relu_chain --memory-mb 1024 --wall-s 60

The benchmark builds every file itself, in a temporary folder (nothing is downloaded), and runs each case in
each mode in a fresh Python process, one after the other, so each peak is that process's own:

- control: the digits CNN exported to ONNX with a dynamic batch (must be accepted);
- relu_chain: an ONNX of 20,000 Relu nodes in a chain (447 KB);
- constant_of_shape: 134 bytes of ONNX whose ConstantOfShape builds a 20000 x 20000 float tensor (1.6 GB) fed to
  an Add (input [1, 20000]; uploaded with input_shape [20000]);
- huge_initializer: an ONNX declaring an unused initializer of 10^15 float elements (dims set, no data);
- model_zip_bomb: a .zip of m.onnx (y = x + sum(w)) and m.onnx.data, w's 1.8 GB of zeros (under 2 MB zipped);
- image_zip: a dataset zip of 40 PNGs of 4000 x 4000 RGB (about 0.4 MB each, 1.9 GB decoded);
- npz_bomb: a dataset .npz whose array is 2 GiB of float32 zeros, deflated (as np.savez_compressed does) to a
  few MB.

Modes (the columns; each "status / seconds / peak MB"):

- before: the web tier before the change: ``intake_run`` inside the web process, no budget (the same
  ``IntakeRequest`` and the operator's default caps), with this checkout's ``compression_core`` or, with
  ``--before-engine REV``, that revision's (``git archive``, nothing checked out). Status: accepted, refused
  (the sentence, cut at 85 characters in the table), failed (an exception that was not a sentence: a 500
  then), crashed (the signal), or timed out (past ``--wall-s``, the process group killed). Peak: the
  process's maximum resident set (from ``wait4``, so also for a killed process). The process runs under a
  safety cap of ``--before-cap-mb`` of address space (default 12288) so that a run cannot take this shared
  machine down; hitting it shows as a refusal or crash naming memory, and means "at least that much".
- after-web: the web request now: Django on a temporary SQLite database and media folder, the service
  ``model_create`` / ``dataset_create`` with a Django ``SimpleUploadedFile`` (``TemporaryUploadedFile`` above
  Django's 10 MB in-memory size, as Django would), ``inspection_enqueue`` replaced by a no-op so nothing is
  published. Status: stored (the upload is kept with status "inspecting") or refused (the ValidationError).
  Peak: the rise of the process's maximum resident set above its value after Django and the services were
  imported (the absolute peak in brackets). The multipart parsing of the request itself is not included.
- after-inspect: the inspecting worker: ``intake_in_sandbox(request, IntakeBudget(memory_mb=--memory-mb))``
  with the default CPU, file-size and wall-clock budget. Status as for before (a refusal by the budget is a
  sentence naming the ``CONDENSE_INSPECT_*`` setting). Peak: the sandbox child's maximum resident set
  (``RUSAGE_CHILDREN``); the worker process itself only reads one line of JSON back.

Every mode also stops at ``--wall-s`` (default 120 s) of the benchmark's own, so a run fits in minutes; a row
that says ">120 s" was killed there, not by the service.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
#: Set for a 'before' child under --before-engine: the folder holding that revision's compression_core.
ENGINE_DIR_ENV = "HOSTILE_BENCH_ENGINE_DIR"
if os.environ.get(ENGINE_DIR_ENV):
    sys.path.insert(0, os.environ[ENGINE_DIR_ENV])

from bench.bench_common import command_line, condense_commit, cpu_name  # noqa: E402

MODES = ("before", "after-web", "after-inspect")
#: Before-cases --quick leaves out: those that ran longest without a budget (23-57 s each on 2 cores).
QUICK_SKIP_BEFORE = ("relu_chain", "constant_of_shape", "model_zip_bomb")
MB = 1024 * 1024
#: The dataset caps under the names an older engine (--before-engine, e.g. 17df0e5) reads them by.
LEGACY_LIMIT_NAMES = {"max_uncompressed_bytes": "dataset_max_uncompressed_bytes", "max_images": "dataset_max_images"}


@dataclass
class Case:
    name: str
    kind: str  # "model" | "dataset"
    path: str
    input_shape: list[int] | None = None
    upload_bytes: int = 0
    extra: dict = field(default_factory=dict)


# -- the files ------------------------------------------------------------------------------------------------

def _onnx_model(graph, opset: int = 17):
    from onnx import helper  # the children that only measure never import onnx

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def build_control(folder: Path) -> Path:
    import torch  # the parent builds the control model once

    from compression_core.models import build_architecture  # torch: the parent only, once

    path = folder / "digits.onnx"
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # the TorchScript exporter, as users export
    torch.onnx.export(build_architecture("digits_cnn").eval(), torch.randn(1, 1, 8, 8), str(path), dynamo=False,
                      opset_version=17, input_names=["input"], dynamic_axes={"input": {0: "batch"}})
    return path


def build_relu_chain(folder: Path, nodes: int = 20_000) -> Path:
    from onnx import TensorProto, helper  # only the parent builds files

    chain = [helper.make_node("Relu", [f"t{i}"], [f"t{i + 1}"]) for i in range(nodes)]
    graph = helper.make_graph(chain, "relu_chain",
                              [helper.make_tensor_value_info("t0", TensorProto.FLOAT, ["batch", 16])],
                              [helper.make_tensor_value_info(f"t{nodes}", TensorProto.FLOAT, ["batch", 16])])
    path = folder / "relu_chain.onnx"
    path.write_bytes(_onnx_model(graph).SerializeToString())
    return path


def build_constant_of_shape(folder: Path) -> Path:
    from onnx import TensorProto, helper  # only the parent builds files

    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [20000, 20000])
    graph = helper.make_graph(
        [helper.make_node("ConstantOfShape", ["shape"], ["big"]), helper.make_node("Add", ["x", "big"], ["y"])],
        "bomb", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 20000])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [20000, 20000])], [shape])
    path = folder / "constant_of_shape.onnx"
    path.write_bytes(_onnx_model(graph).SerializeToString())
    return path


def build_huge_initializer(folder: Path) -> Path:
    from onnx import TensorProto, helper  # only the parent builds files

    unused = TensorProto(name="unused", data_type=TensorProto.FLOAT, dims=[10**15])  # dims, and no data at all
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "huge_initializer",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])], [unused])
    path = folder / "huge_initializer.onnx"
    path.write_bytes(_onnx_model(graph).SerializeToString())
    return path


def _zeros_into(handle, total: int, chunk: int = 16 * MB) -> None:
    zeros = bytes(chunk)
    left = total
    while left:
        handle.write(zeros[:min(chunk, left)])
        left -= min(chunk, left)


def build_model_zip_bomb(folder: Path, data_bytes: int = 1_800_000_000) -> Path:
    from onnx import TensorProto, helper  # only the parent builds files

    elements = data_bytes // 4
    weight = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[elements],
                         data_location=TensorProto.EXTERNAL)
    for key, value in (("location", "m.onnx.data"), ("offset", "0"), ("length", str(elements * 4))):
        weight.external_data.add(key=key, value=value)
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["w"], ["total"], keepdims=0), helper.make_node("Add", ["x", "total"], ["y"])],
        "zip_bomb", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])], [weight])
    path = folder / "model_zip_bomb.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("m.onnx", _onnx_model(graph).SerializeToString())
        with archive.open("m.onnx.data", "w", force_zip64=True) as member:
            _zeros_into(member, elements * 4)
    return path


def build_image_zip(folder: Path, images: int = 40, side: int = 4000) -> Path:
    import numpy as np  # the parent builds the PNGs
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = np.zeros((side, side, 3), np.uint8)
    speckles = rng.random((side, side)) < 0.0033  # low entropy: about 0.4 MB a PNG
    pixels[speckles] = rng.integers(0, 256, (int(speckles.sum()), 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    path = folder / "image_zip.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:  # PNGs are compressed already
        for index in range(images):
            archive.writestr(f"{'ab'[index % 2]}/{index:03d}.png", buffer.getvalue())
    return path


def build_npz_bomb(folder: Path, array_bytes: int = 2 * 1024**3) -> Path:
    """What ``np.savez_compressed(path, x=np.zeros(...))`` writes, streamed so the parent never holds 2 GiB."""
    import numpy as np  # only the parent builds files

    shape = (array_bytes // (64 * 64 * 4), 1, 64, 64)
    path = folder / "npz_bomb.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("x.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_2_0(member, {"descr": "<f4", "fortran_order": False, "shape": shape})
            _zeros_into(member, array_bytes)
    return path


BUILDERS = {
    "control": ("model", build_control, None),
    "relu_chain": ("model", build_relu_chain, None),
    "constant_of_shape": ("model", build_constant_of_shape, [20000]),
    "huge_initializer": ("model", build_huge_initializer, None),
    "model_zip_bomb": ("model", build_model_zip_bomb, None),
    "image_zip": ("dataset", build_image_zip, None),
    "npz_bomb": ("dataset", build_npz_bomb, None),
}


# -- one measurement, in a fresh process ----------------------------------------------------------------------

def _maxrss_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # kB on Linux


def _intake_request(case: Case, workdir: Path, limits: dict):
    from compression_core.jobs.intake import IntakeRequest  # imported in the measuring child only

    if case.kind == "dataset":
        return IntakeRequest(kind="dataset", workdir=str(workdir), path=case.path, limits=limits)
    return IntakeRequest(kind="model", workdir=str(workdir), path=case.path, source="onnx",
                         input_shape=case.input_shape, limits=limits)


def _outcome_of(exc: BaseException) -> str:
    if isinstance(exc, ValueError):
        return "refused: " + str(exc)
    return f"failed: {type(exc).__name__}: {exc}"


def child_before(case: Case, workdir: Path, limits: dict, _args) -> dict:
    import compression_core  # in the measured process, so it counts there
    from compression_core.jobs.intake import intake_run

    request = _intake_request(case, workdir, limits)
    started = time.perf_counter()
    try:
        intake_run(request)
        status = "accepted"
    except Exception as exc:  # noqa: BLE001 - the old web tier answered whatever came out
        status = _outcome_of(exc)
    return {"status": status, "seconds": time.perf_counter() - started, "engine": compression_core.__file__}


def child_after_inspect(case: Case, workdir: Path, limits: dict, args) -> dict:
    from compression_core.jobs.sandbox import IntakeBudget, IntakeRefused, intake_in_sandbox  # as the worker does

    request = _intake_request(case, workdir, limits)
    started = time.perf_counter()
    try:
        intake_in_sandbox(request, IntakeBudget(memory_mb=args.memory_mb))
        status = "accepted"
    except IntakeRefused as exc:
        status = "refused: " + str(exc)
    except Exception as exc:  # noqa: BLE001 - anything else is a finding
        status = _outcome_of(exc)
    return {"status": status, "seconds": time.perf_counter() - started,
            "child_peak_mb": _maxrss_mb(resource.RUSAGE_CHILDREN)}


def child_after_web(case: Case, workdir: Path, limits: dict, _args) -> dict:
    import django  # configured from the environment the parent passed

    django.setup()
    from django.conf import settings  # these need django.setup() first
    from django.contrib.auth import get_user_model
    from django.core.exceptions import ValidationError
    from django.core.files.uploadedfile import SimpleUploadedFile, TemporaryUploadedFile

    from webapp.datahub import services as datahub_services
    from webapp.modelhub import services as modelhub_services

    def not_published(*_args, **_kwargs):  # nothing is published: no broker here, and the worker is measured apart
        return None

    modelhub_services.inspection_enqueue = not_published
    datahub_services.inspection_enqueue = not_published
    owner, _ = get_user_model().objects.get_or_create(username="hostilebench")
    baseline_mb = _maxrss_mb(resource.RUSAGE_SELF)

    name = Path(case.path).name
    size = Path(case.path).stat().st_size
    if size > settings.FILE_UPLOAD_MAX_MEMORY_SIZE:  # what Django's upload handlers would have made of it
        upload = TemporaryUploadedFile(name, "application/octet-stream", size, None)
        with open(case.path, "rb") as source:
            shutil.copyfileobj(source, upload.file, 4 * MB)
        upload.file.seek(0)
    else:
        upload = SimpleUploadedFile(name, Path(case.path).read_bytes(), "application/octet-stream")
    started = time.perf_counter()  # the service call: what the view does once Django has parsed the body
    try:
        if case.kind == "dataset":
            stored = datahub_services.dataset_create(owner=owner, name=case.name, upload=upload)
        else:
            stored = modelhub_services.model_create(owner=owner, name=case.name, source="onnx", upload=upload,
                                                    input_shape=case.input_shape)
        status = f"stored ({stored.status})"
    except ValidationError as exc:
        status = "refused: " + " ".join(exc.messages)
    except Exception as exc:  # noqa: BLE001 - a 500: a finding
        status = _outcome_of(exc)
    seconds = time.perf_counter() - started
    return {"status": status, "seconds": seconds, "baseline_mb": baseline_mb}


CHILDREN = {"before": child_before, "after-web": child_after_web, "after-inspect": child_after_inspect}


def child_main(args) -> int:
    spec = json.loads(args.child)
    if spec["mode"] == "before" and args.before_cap_mb:
        cap = args.before_cap_mb * MB
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    case = Case(**spec["case"])
    result = CHILDREN[spec["mode"]](case, Path(spec["workdir"]), spec["limits"], args)
    result["self_peak_mb"] = _maxrss_mb(resource.RUSAGE_SELF)
    sys.stdout.write("\n" + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


# -- the parent -----------------------------------------------------------------------------------------------

@dataclass
class Measured:
    status: str
    seconds: float | None
    peak_mb: float | None
    detail: dict = field(default_factory=dict)


def measure(mode: str, case: Case, tmp: Path, limits: dict, env: dict, args) -> Measured:
    if mode == "before" and args.before_engine:
        env = {**env, ENGINE_DIR_ENV: str(tmp / "before-engine")}
        limits = {**limits, **{old: limits[new] for old, new in LEGACY_LIMIT_NAMES.items() if new in limits}}
    workdir = Path(tempfile.mkdtemp(prefix=f"{case.name}-{mode}-", dir=tmp / "work"))
    spec = {"mode": mode, "case": case.__dict__, "workdir": str(workdir), "limits": limits}
    command = [sys.executable, __file__, "--child", json.dumps(spec), "--memory-mb", str(args.memory_mb),
               "--before-cap-mb", str(args.before_cap_mb)]
    out_path, err_path = workdir.parent / f"{workdir.name}.out", workdir.parent / f"{workdir.name}.err"
    started = time.perf_counter()
    with open(out_path, "w") as out_file, open(err_path, "w") as err_file:
        child = subprocess.Popen(command, stdout=out_file, stderr=err_file, env=env, cwd=workdir,
                                 start_new_session=True)
    # wait4, not Popen.wait: its rusage is this child's own peak (and its reaped children's), also when it
    # crashed or was killed.
    timed_out = False
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() - started > args.wall_s and not timed_out:
            timed_out = True
            os.killpg(child.pid, signal.SIGKILL)
        time.sleep(0.05)
    child.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - started
    process_peak_mb = usage.ru_maxrss / 1024
    out, err = out_path.read_text(errors="replace"), err_path.read_text(errors="replace")
    answer = None
    for line in reversed(out.strip().splitlines()):
        try:
            answer = json.loads(line)
            break
        except ValueError:
            continue
    shutil.rmtree(workdir, ignore_errors=True)
    if timed_out:
        return Measured(f"timed out (>{args.wall_s:.0f} s)", None, process_peak_mb, {"at_least": True})
    if answer is None:
        code = child.returncode
        what = f"crashed ({signal.Signals(-code).name})" if code < 0 else f"failed: exit {code}"
        tail = (err.strip().splitlines() or [""])[-1]
        return Measured(f"{what} {tail}".strip(), elapsed, process_peak_mb)
    if mode == "before" and args.before_engine and "before-engine" not in answer["engine"]:
        raise RuntimeError(f"the before run imported {answer['engine']}, not the engine of {args.before_engine}")
    if mode == "after-inspect":
        peak = answer["child_peak_mb"]
    elif mode == "after-web":
        peak = answer["self_peak_mb"] - answer["baseline_mb"]
    else:
        peak = answer["self_peak_mb"]
    return Measured(answer["status"], answer["seconds"], peak, answer)


def run_child_process(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, **kwargs)


def django_env(tmp: Path) -> dict:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("CONDENSE_", "DATABASE_URL"))}
    return {**env, "CONDENSE_VAR_DIR": str(tmp / "var"), "CONDENSE_MEDIA_ROOT": str(tmp / "media"),
            "DATABASE_URL": f"sqlite:///{tmp / 'var' / 'db.sqlite3'}", "DJANGO_SECRET_KEY": "hostile-bench-" + "x" * 40,
            "DJANGO_SETTINGS_MODULE": "webapp.settings", "PYTHONPATH": str(ROOT)}


def prepare_django(env: dict) -> dict:
    """Migrate the temporary database; the operator's default caps (what both inspections are given)."""
    (Path(env["CONDENSE_VAR_DIR"])).mkdir(parents=True, exist_ok=True)
    migrate = run_child_process([sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env)
    if migrate.returncode:
        raise RuntimeError(f"manage.py migrate failed:\n{migrate.stdout[-2000:]}{migrate.stderr[-2000:]}")
    limits = run_child_process([sys.executable, "manage.py", "shell", "-c",
                                "import json; from webapp.common.intake import intake_limits; "
                                "print(json.dumps(intake_limits()))"], cwd=ROOT, env=env)
    if limits.returncode:
        raise RuntimeError(f"reading the caps failed:\n{limits.stderr[-2000:]}")
    return json.loads(limits.stdout.strip().splitlines()[-1])


def export_engine(revision: str, folder: Path) -> None:
    """``compression_core`` as it was at ``revision``, unpacked into ``folder`` (git archive; nothing checked out)."""
    folder.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision, "compression_core"], capture_output=True)
    if archive.returncode:
        raise SystemExit(f"git archive {revision} failed: {archive.stderr.decode()[-500:]}")
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)


def size_text(size: int) -> str:
    if size < 10 * 1024:
        return f"{size} B"
    if size < MB:
        return f"{size / 1024:.0f} KB"
    return f"{size / MB:.1f} MB"


def cell(measured: Measured | None, mode: str) -> list[str]:
    if measured is None:
        return ["not run", "-", "-"]
    status = measured.status if len(measured.status) <= 88 else measured.status[:85] + "..."
    status = status.replace("|", "/").replace("\n", " ")
    seconds = "-" if measured.seconds is None else f"{measured.seconds:.{2 if measured.seconds < 1 else 1}f}"
    if measured.peak_mb is None:
        peak = "-"
    elif "self_peak_mb" not in measured.detail:  # killed or crashed: the whole process's peak, from wait4
        peak = f"{'>=' if measured.detail.get('at_least') else ''}{measured.peak_mb:.0f} (process)"
    elif mode == "after-web":
        peak = f"+{measured.peak_mb:.0f} ({measured.detail['self_peak_mb']:.0f})"
    else:
        peak = f"{measured.peak_mb:.0f}"
    return [status, seconds, peak]


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join([*lines, *("| " + " | ".join(row) + " |" for row in rows)])


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default=",".join(BUILDERS), help=f"comma-separated subset of {', '.join(BUILDERS)}")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated subset of {', '.join(MODES)}")
    parser.add_argument("--quick", action="store_true", help=f"skip the before runs of {', '.join(QUICK_SKIP_BEFORE)}")
    parser.add_argument("--memory-mb", type=int, default=None,
                        help="the inspection's memory budget beyond its libraries (default: IntakeBudget's, 3072)")
    parser.add_argument("--wall-s", type=float, default=120.0,
                        help="the benchmark's own limit on one run (default 120)")
    parser.add_argument("--before-cap-mb", type=int, default=12288,
                        help="address-space cap on a 'before' process, to protect the machine (0: none)")
    parser.add_argument("--before-engine", default="",
                        help="a git revision: the 'before' runs use that revision's compression_core (e.g. the "
                        "engine before its structural checks); default: this checkout's")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_mb is None:
        from compression_core.jobs.sandbox import IntakeBudget  # the default budget, read where it is defined

        args.memory_mb = IntakeBudget().memory_mb
    return args


def main() -> int:
    args = parse_args()
    if args.child:
        return child_main(args)
    sys.stdout.reconfigure(line_buffering=True)
    cases = [name.strip() for name in args.cases.split(",") if name.strip()]
    modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    unknown = [name for name in cases if name not in BUILDERS] + [mode for mode in modes if mode not in MODES]
    if unknown:
        raise SystemExit(f"unknown case or mode: {', '.join(unknown)}")
    print(f"command: {command_line('bench/hostile_uploads.py')}")
    print(f"machine: {os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), {cpu_name()}, "
          f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 1024**3:.0f} GB memory, "
          f"load average {os.getloadavg()[0]:.2f}; condense {condense_commit(ROOT)}")
    print(f"budget: IntakeBudget(memory_mb={args.memory_mb}) and its default CPU/file/wall limits; "
          f"benchmark wall limit {args.wall_s:.0f} s a run; "
          f"before-runs capped at {args.before_cap_mb} MB of address space")
    tmp = Path(tempfile.mkdtemp(prefix="condense-hostilebench-"))
    try:
        (tmp / "files").mkdir()
        (tmp / "work").mkdir()
        env = django_env(tmp)
        if args.before_engine:
            export_engine(args.before_engine, tmp / "before-engine")
            subject = subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%h %s", args.before_engine],
                                     capture_output=True, text=True).stdout.strip()
            print(f"before: compression_core from {subject[:110]}")
        limits = prepare_django(env)
        print(f"caps: {limits}")
        built: list[Case] = []
        for name in cases:
            kind, builder, input_shape = BUILDERS[name]
            started = time.perf_counter()
            path = builder(tmp / "files")
            built.append(Case(name, kind, str(path), input_shape, path.stat().st_size))
            print(f"built {name}: {size_text(path.stat().st_size)} in {time.perf_counter() - started:.1f} s")
        rows = []
        for case in built:
            row = [case.name, size_text(case.upload_bytes)]
            for mode in MODES:
                if mode not in modes or (args.quick and mode == "before" and case.name in QUICK_SKIP_BEFORE):
                    row += cell(None, mode)
                    continue
                measured = measure(mode, case, tmp, limits, env, args)
                print(f"  {case.name} / {mode}: {measured.status[:160]} "
                      f"({'-' if measured.seconds is None else f'{measured.seconds:.1f} s'}, "
                      f"peak {'-' if measured.peak_mb is None else f'{measured.peak_mb:.0f} MB'})")
                row += cell(measured, mode)
            rows.append(row)
        header = ["case", "upload"]
        for mode, peak in (("before", "peak MB"), ("after-web", "peak MB above baseline (absolute)"),
                           ("after-inspect", "child peak MB")):
            header += [f"{mode}: status", f"{mode}: s", f"{mode}: {peak}"]
        print()
        print(markdown_table(header, rows))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
