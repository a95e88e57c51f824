"""Fault benchmark (issue 12): jobs through two real workers while one is killed twice and Redis restarts.

    .venv/bin/python bench/fault_recovery.py --database-url postgres://postgres@127.0.0.1:5432/   # 200 jobs
    .venv/bin/python bench/fault_recovery.py --quick                                              # 40 jobs, SQLite
    .venv/bin/python bench/fault_recovery.py --jobs 100 --production-timing --workers-timeout 1800

Everything runs on private services started and removed by the benchmark: a ``redis-server`` on a free
port with no persistence (a restart loses every queued message), a database of its own (a PostgreSQL
database ``condense_faultbench_<pid>`` created on the server of ``--database-url`` and dropped at the
end, or a SQLite file in a temporary folder), and temporary media and var folders. The benchmark
migrates the database, submits the jobs through ``webapp.jobs.services.job_create`` (the digits CNN,
L1NormPruner at 50% on every Conv2d, speedup, the digits dataset: about 2-4 s a job on 2 cores), and
starts two prefork workers (one pool child each) on the ``cpu`` queue with short leases (6 s lease,
1 s heartbeat, 2 s sweep, 5 s re-publish; ``--production-timing``: 30/10/15/60).

Faults, each fired once the given share of the jobs has finished and while jobs are running:

- at 20% and 70%: SIGKILL worker 1's whole process group (main process and pool child) while it runs
  a job, and start it again under a new node name;
- at 45%: SIGKILL Redis while jobs wait in the queue, start it again on the same port, empty.

What the table counts, from the database at the deadline (``--workers-timeout`` seconds after the
workers are ready, or as soon as every job is finished):

- lost: a job still queued (nobody will run it) or missing; stuck: a job still running;
- run twice: a job logged "status: succeeded" more than once, or a run that reached the end after its
  lease was taken over (the worker logs "finished after losing its lease"): two runs did the whole work;
- retried: a job run more than once (attempts > 1) because its worker was killed: expected, and fine
  when it ends once;
- "runs stopped when their lease was taken over": a live run that found its lease gone (worker log
  "lease ... lost"); with SIGKILL as the only fault there should be none, since a killed run is dead;
- recovery of a fault, from the kill (or restart) to: the new worker ready (Redis answering); the jobs
  the fault touched re-queued by a sweep (kills); the first and the last of them claimed again or
  finished (a kill touches the job the killed worker held, mid-run; the Redis restart touches the jobs
  queued at that moment, whose messages are gone, counted once Redis is back, so its "last" is the
  time to drain that backlog); the first job to finish after the fault. A re-queued job goes to the
  back of the queue, so "claimed again" includes its wait behind the jobs already queued.

The exit status is 1 when a job is lost, stuck or run twice.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_common import command_line, condense_commit, cpu_name  # noqa: E402
from bench.fault_services import PrivateDatabase, RedisServer, Worker, free_port  # noqa: E402

BENCH_TIMING = {"CONDENSE_LEASE_S": "6", "CONDENSE_HEARTBEAT_S": "1", "CONDENSE_SWEEP_S": "2",
                "CONDENSE_REPUBLISH_S": "5"}
PRODUCTION_TIMING = {"CONDENSE_LEASE_S": "30", "CONDENSE_HEARTBEAT_S": "10", "CONDENSE_SWEEP_S": "15",
                     "CONDENSE_REPUBLISH_S": "60"}
#: (share of jobs finished, fault) in the order they fire.
FAULT_PLAN = [(0.20, "kill worker 1"), (0.45, "restart Redis"), (0.70, "kill worker 1")]
JOB_PARAMS = {"config_list": [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]}
TERMINAL = ("succeeded", "failed", "cancelled")


@dataclass
class Fault:
    kind: str
    at: float  # time.time() of the kill
    touched: list[int]
    worker_back_at: float | None = None


@dataclass
class Run:
    """What happened, gathered while the benchmark runs."""

    job_ids: list[int] = field(default_factory=list)
    workers_ready_at: float = 0.0
    submitted_at: float = 0.0
    faults: list[Fault] = field(default_factory=list)
    ended_at: float = 0.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=None, help="jobs to submit (default 200, --quick 40)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 40 jobs")
    parser.add_argument("--database-url", default="",
                        help="a PostgreSQL server (postgres://user@host:port/) to create a private database on; "
                        "default: a SQLite file in a temporary folder")
    parser.add_argument("--workers-timeout", type=float, default=None,
                        help="seconds the workers get, once ready, to finish every job; unfinished jobs then count "
                        "as lost or stuck (default 120 + 4 s a job, +300 with --production-timing)")
    parser.add_argument("--production-timing", action="store_true",
                        help="the default lease/heartbeat/sweep/re-publish periods (30/10/15/60 s)")
    parser.add_argument("--redis-down-s", type=float, default=2.0, help="seconds Redis stays down (default 2)")
    parser.add_argument("--keep-logs", type=Path, default=None, help="copy the worker and Redis logs to this folder")
    args = parser.parse_args()
    args.jobs = args.jobs or (40 if args.quick else 200)
    if args.workers_timeout is None:
        args.workers_timeout = 120 + 4 * args.jobs + (300 if args.production_timing else 0)
    return args


def migrate(env: dict) -> None:
    result = subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env,
                            capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"manage.py migrate failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")


def submit_jobs(count: int) -> list[int]:
    from django.contrib.auth import get_user_model  # Django is set up only once the private database exists

    from webapp.jobs.services import job_create
    from webapp.modelhub.services import model_create

    owner = get_user_model().objects.create_user("faultbench", password="faultbench-42")
    model = model_create(owner=owner, name="digits", source="builtin", architecture="digits_cnn")
    return [job_create(owner=owner, model=model, algorithm="L1NormPruner", params=JOB_PARAMS, speedup=True,
                       dataset="digits", device="cpu", name=f"faultbench {i}").pk for i in range(count)]


def _counts(job_ids: list[int]) -> Counter:
    from django.db.models import Count  # after django.setup()

    from webapp.jobs.models import Job

    rows = Job.objects.filter(pk__in=job_ids).values("status").annotate(n=Count("pk"))
    return Counter({row["status"]: row["n"] for row in rows})


def _jobs_where(**filters) -> list[int]:
    from webapp.jobs.models import Job  # after django.setup()

    return sorted(Job.objects.filter(**filters).values_list("pk", flat=True))


def _wait_for_fault_moment(run: Run, share: float, condition, deadline: float) -> bool:
    """Wait until ``share`` of the jobs finished and ``condition()`` holds; False past the deadline."""
    target = share * len(run.job_ids)
    while time.time() < deadline:
        counts = _counts(run.job_ids)
        if sum(counts[s] for s in TERMINAL) >= target and condition():
            return True
        if sum(counts[s] for s in TERMINAL) == len(run.job_ids):
            return False
        time.sleep(0.1)
    return False


def run_faults(run: Run, workers: list[Worker], redis: RedisServer, redis_down_s: float, deadline: float,
               make_worker) -> None:
    """Fire the faults of FAULT_PLAN in turn; worker 1 is replaced by a new node after each kill."""
    from django.utils import timezone  # after django.setup()

    restarts = 0
    for share, kind in FAULT_PLAN:
        if kind == "kill worker 1":
            def condition():  # mid-run: a job worker 1 has been running for a second at least
                return bool(_jobs_where(status="running", worker=workers[0].name,
                                        started_at__lte=timezone.now() - timedelta(seconds=1)))
        else:
            def condition():
                counts = _counts(run.job_ids)
                return counts["queued"] > 0 and counts["running"] > 0
        if not _wait_for_fault_moment(run, share, condition, deadline):
            print(f"  {kind} at {share:.0%}: not fired (the jobs finished or the deadline passed first)")
            continue
        if kind == "kill worker 1":
            doomed = workers[0]
            doomed.kill()
            fault = Fault(kind, time.time(), _jobs_where(status="running", worker=doomed.name))
            restarts += 1
            workers[0] = make_worker(f"w1-{restarts}")
            fault.worker_back_at = workers[0].wait_ready()
            fault.kind = f"kill worker 1 ({doomed.name.split('@')[0]} -> {workers[0].name.split('@')[0]})"
        else:
            redis.kill()
            fault = Fault(kind, time.time(), _jobs_where(pk__in=run.job_ids, status="queued"))
            time.sleep(redis_down_s)
            redis.start()
            fault.worker_back_at = time.time()
        run.faults.append(fault)
        print(f"  {fault.kind} at {fault.at - run.workers_ready_at:.1f} s: {len(fault.touched)} job(s) touched")


def wait_until_done(run: Run, deadline: float) -> None:
    last_print = 0.0
    while time.time() < deadline:
        counts = _counts(run.job_ids)
        finished = sum(counts[s] for s in TERMINAL)
        if time.time() - last_print > 15:
            print(f"  {time.time() - run.workers_ready_at:6.1f} s: " +
                  ", ".join(f"{counts[s]} {s}" for s in ("queued", "running", *TERMINAL)))
            last_print = time.time()
        if finished == len(run.job_ids):
            return
        time.sleep(0.5)


# -- measuring ------------------------------------------------------------------------------------------------

CLAIMED = re.compile(r"^(status: running$|restarting: )")
FINISHED = re.compile(r"^status: (succeeded|failed|cancelled)$")


def job_events(job_ids: list[int]) -> dict[int, list[tuple[float, str]]]:
    """Each job's log lines as (time.time()-comparable seconds, message), oldest first."""
    from webapp.jobs.models import JobLog  # after django.setup()

    events: dict[int, list[tuple[float, str]]] = {job_id: [] for job_id in job_ids}
    for job_id, at, message in JobLog.objects.filter(job_id__in=job_ids).order_by("pk").values_list(
            "job_id", "created_at", "message"):
        events[job_id].append((at.timestamp(), message))
    return events


def _first_after(events: list[tuple[float, str]], since: float, pattern: re.Pattern) -> float | None:
    return next((at for at, message in events if at >= since and pattern.match(message)), None)


def fault_rows(run: Run, events: dict[int, list[tuple[float, str]]]) -> list[list[str]]:
    """One row a fault: when, how many jobs it touched, and the recovery times (seconds after it)."""
    def seconds(value: float | None, since: float) -> str:
        return "never" if value is None else f"{value - since:.1f}"

    claimed_or_done = re.compile(f"{CLAIMED.pattern}|{FINISHED.pattern}")
    requeued_or_done = re.compile(f"^status: queued$|^restarting: |{FINISHED.pattern}")
    rows = []
    for fault in run.faults:
        # After a kill the touched job can only be claimed again by another run; a Redis restart can find a
        # message just delivered, whose job is claimed while the broker is down: count from Redis's return.
        since = fault.at if fault.kind.startswith("kill") else fault.worker_back_at
        back = [_first_after(events[job_id], since, claimed_or_done) for job_id in fault.touched]
        done = [at for job_events_ in events.values() for at, message in job_events_
                if at >= fault.at and message == "status: succeeded"]
        if fault.kind.startswith("kill"):
            requeued = [_first_after(events[job_id], fault.at, requeued_or_done) for job_id in fault.touched]
            noticed = "-" if not requeued else "never" if None in requeued else seconds(max(requeued), fault.at)
        else:
            noticed = "-"  # nothing to notice: the messages are gone, the jobs are queued already
        rows.append([
            fault.kind, f"{fault.at - run.workers_ready_at:.1f}", str(len(fault.touched)),
            seconds(fault.worker_back_at, fault.at), noticed,
            "-" if not back else seconds(min((b for b in back if b is not None), default=None), fault.at),
            "-" if not back else ("never" if None in back else seconds(max(back), fault.at)),
            seconds(min(done, default=None), fault.at),
        ])
    return rows


WORKER_LOG_PATTERNS = {
    "dropped": re.compile(r"job (\d+): run \d+ finished after losing its lease"),
    "lease_lost": re.compile(r"job (\d+): lease \S+ lost; another run holds the job"),
    "held": re.compile(r"job (\d+) is held by "),
    "done_already": re.compile(r"job (\d+) is (?:succeeded|failed|cancelled); task "),
    "sweep": re.compile(r"sweep: re-queued \[([\d, ]*)\], failed \[([\d, ]*)\], re-published \[([\d, ]*)\]"),
}


def worker_log_findings(log_dir: Path) -> dict[str, list[int]]:
    """Job ids per kind of line in every worker's log (a job id once per line)."""
    found: dict[str, list[int]] = {key: [] for key in ("dropped", "lease_lost", "held", "done_already", "requeued",
                                                       "swept_failed", "republished")}
    for log in sorted(log_dir.glob("w*.log")):
        text = log.read_text(errors="replace")
        for key in ("dropped", "lease_lost", "held", "done_already"):
            found[key] += [int(match.group(1)) for match in WORKER_LOG_PATTERNS[key].finditer(text)]
        for match in WORKER_LOG_PATTERNS["sweep"].finditer(text):
            for key, ids in zip(("requeued", "swept_failed", "republished"), match.groups()):
                found[key] += [int(i) for i in ids.replace(" ", "").split(",") if i]
    return found


def error_group(error: str) -> str:
    """A failure's sentence with its numbers, times and names blanked, so alike failures group."""
    text = re.sub(r"\(last: [^,]*,", "(last: <worker>,", error)
    text = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", "<time>", text)
    return re.sub(r"\d+", "N", text)


@dataclass
class Outcome:
    rows: list[tuple[str, str]]
    errors: Counter
    problems: dict[str, list[int]]
    #: Each notable job's story: its log lines (seconds after the workers were ready) and unfinished runs.
    stories: dict[int, list[str]]


def job_story(job, lines: list[tuple[float, str]], since: float) -> list[str]:
    story = [f"{at - since:7.2f} s  {message.splitlines()[0][:160]}" for at, message in lines]
    return story + [f"unfinished run: {entry}" for entry in job.attempt_history]


def measure(run: Run, log_dir: Path) -> tuple[Outcome, list[list[str]]]:
    """The summary (from the database and the worker logs) and the fault rows."""
    from webapp.jobs.models import Job  # after django.setup()

    jobs = {job.pk: job for job in Job.objects.filter(pk__in=run.job_ids)}
    events = job_events(run.job_ids)
    logs = worker_log_findings(log_dir)
    by_status = Counter(job.status for job in jobs.values())
    succeeded_twice = [job_id for job_id, lines in events.items()
                       if sum(message == "status: succeeded" for _, message in lines) > 1]
    claims = {job_id: sum(bool(CLAIMED.match(message)) for _, message in lines) for job_id, lines in events.items()}
    problems = {
        "live runs that lost their lease": sorted(set(logs["lease_lost"])),
        "lost": sorted([job_id for job_id in run.job_ids if job_id not in jobs]
                       + [job.pk for job in jobs.values() if job.status == "queued"]),
        "stuck": sorted(job.pk for job in jobs.values() if job.status == "running"),
        "run twice": sorted(set(succeeded_twice) | set(logs["dropped"])),
        "claims != attempts": sorted(job_id for job_id, job in jobs.items() if claims[job_id] != job.attempts),
    }
    last_end = max((at for lines in events.values() for at, message in lines if FINISHED.match(message)),
                   default=run.ended_at)
    busy_s = last_end - run.workers_ready_at
    retried = sum(job.attempts > 1 for job in jobs.values())
    rows = [
        ("jobs submitted", str(len(run.job_ids))),
        ("succeeded", str(by_status["succeeded"])),
        ("failed", str(by_status["failed"])),
        ("cancelled", str(by_status["cancelled"])),
        ("lost (still queued at the deadline, or missing)", str(len(problems["lost"]))),
        ("stuck (still running at the deadline)", str(len(problems["stuck"]))),
        ("run twice (two runs reached the end)", str(len(problems["run twice"]))),
        ("retried (attempts > 1)", str(retried)),
        ("runs claimed != attempts counted", str(len(problems["claims != attempts"]))),
        ("runs stopped when their lease was taken over", str(len(logs["lease_lost"]))),
        ("duplicate deliveries ignored (lease live / job finished)",
         f"{len(logs['held'])} / {len(logs['done_already'])}"),
        ("sweep: re-queued / failed / re-published", " / ".join(
            str(len(logs[key])) for key in ("requeued", "swept_failed", "republished"))),
        ("wall time, first submission to last job finished", f"{last_end - run.submitted_at:.1f} s"),
        ("workers' time, ready to last job finished", f"{busy_s:.1f} s"),
        ("throughput (succeeded / workers' time)", f"{60 * by_status['succeeded'] / max(busy_s, 1e-9):.1f} jobs/min"),
    ]
    errors = Counter(error_group(job.error) for job in jobs.values() if job.status == "failed")
    notable = sorted({*(i for ids in problems.values() for i in ids),
                      *(i for i, job in jobs.items() if job.attempts > 1)} & set(jobs))
    stories = {job_id: job_story(jobs[job_id], events[job_id], run.workers_ready_at) for job_id in notable}
    return Outcome(rows, errors, problems, stories), fault_rows(run, events)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join([*lines, *("| " + " | ".join(row) + " |" for row in rows)])


FAULT_HEADER = ["fault", "at (s)", "jobs touched", "worker / Redis back (s)", "touched jobs re-queued (s)",
                "first touched job claimed again (s)",
                "last touched job claimed again (s)", "first job finished after (s)"]


# -- the run --------------------------------------------------------------------------------------------------

def service_env(database: PrivateDatabase, redis: RedisServer, tmp: Path, timing: dict) -> dict:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("CONDENSE_", "DATABASE_URL", "REDIS_URL"))}
    return {**env, "DATABASE_URL": database.url, "REDIS_URL": redis.url, "CONDENSE_MEDIA_ROOT": str(tmp / "media"),
            "CONDENSE_VAR_DIR": str(tmp / "var"), "DJANGO_SETTINGS_MODULE": "webapp.settings",
            "PYTHONUNBUFFERED": "1", **timing}


def benchmark(args: argparse.Namespace, tmp: Path, started: list[Worker], redis: RedisServer,
              database: PrivateDatabase) -> int:
    timing = PRODUCTION_TIMING if args.production_timing else BENCH_TIMING
    log_dir = tmp / "logs"
    log_dir.mkdir()
    env = service_env(database, redis, tmp, timing)
    redis.start()
    database.create()
    print(f"database: {database.kind}")
    print(f"redis: {redis.url} (private, no persistence)")
    print("timing: " + ", ".join(f"{key}={value}" for key, value in timing.items()) +
          f", CONDENSE_JOB_MAX_ATTEMPTS={env.get('CONDENSE_JOB_MAX_ATTEMPTS', '2 (default)')}")
    migrate(env)
    os.environ.update(env)
    import django  # configured from the private services' environment just set

    django.setup()

    def make_worker(base: str) -> Worker:
        worker = Worker(f"{base}@{socket.gethostname()}", env, log_dir / f"{base}.log").launch()
        started.append(worker)
        return worker

    run = Run(submitted_at=time.time())
    run.job_ids = submit_jobs(args.jobs)
    print(f"submitted {len(run.job_ids)} jobs in {time.time() - run.submitted_at:.1f} s; starting 2 workers")
    workers = [make_worker("w1-0"), make_worker("w2")]
    run.workers_ready_at = max(worker.wait_ready() for worker in workers)
    deadline = run.workers_ready_at + args.workers_timeout
    print(f"workers ready {run.workers_ready_at - run.submitted_at:.1f} s after the first submission; "
          f"deadline in {args.workers_timeout:.0f} s")
    run_faults(run, workers, redis, args.redis_down_s, deadline, make_worker)
    wait_until_done(run, deadline)
    run.ended_at = time.time()
    for worker in workers:
        worker.stop()
    outcome, faults = measure(run, log_dir)
    print()
    print(markdown_table(["measure", "value"], [list(row) for row in outcome.rows]))
    print()
    print(markdown_table(FAULT_HEADER, faults))
    if outcome.errors:
        print("\nfailed jobs, by error:")
        for error, count in outcome.errors.most_common():
            print(f"- {count} x {error}")
    bad = {name: ids for name, ids in outcome.problems.items() if ids}
    for name, ids in bad.items():
        print(f"\n{name}: job ids {ids}")
        for job_id in ids[:5]:  # the story of the first few, enough to see what happened
            story = outcome.stories.get(job_id, ["missing from the database"])
            print(f"job {job_id}:\n" + "\n".join(f"  {line}" for line in story))
    if args.keep_logs:
        shutil.copytree(log_dir, args.keep_logs, dirs_exist_ok=True)
        (args.keep_logs / "jobs.txt").write_text("".join(
            f"job {job_id}:\n" + "".join(f"  {line}\n" for line in story) for job_id, story in outcome.stories.items()))
        shutil.copy(tmp / "redis" / "redis.log", args.keep_logs / "redis.log")
        print(f"logs copied to {args.keep_logs}")
    failing = {name: ids for name, ids in bad.items() if name in ("lost", "stuck", "run twice")}
    return 1 if failing else 0


def main() -> int:
    args = parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # progress lines show up in a log file as they happen
    print(f"command: {command_line('bench/fault_recovery.py')}")
    print(f"machine: {os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), {cpu_name()}, "
          f"load average {os.getloadavg()[0]:.2f}; condense {condense_commit(ROOT)}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # cleanup runs on a plain kill too
    tmp = Path(tempfile.mkdtemp(prefix="condense-faultbench-"))
    redis = RedisServer(free_port(), tmp / "redis")
    database = PrivateDatabase(args.database_url, tmp)
    started: list[Worker] = []
    try:
        return benchmark(args, tmp, started, redis, database)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave services behind
        for worker in started:
            worker.stop(timeout=5)
        redis.kill()
        if "django.db" in sys.modules:  # this run set Django up: its connection would block the drop
            sys.modules["django.db"].connections.close_all()
        database.drop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
