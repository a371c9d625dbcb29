"""Storage at scale: N worker processes on one PostgreSQL study, straight or through the proxy.

    python bench/storage_scale.py [--workers 2,8,32] [--prefill 1000,10000] [--seconds 8]
                                  [--no-proxy]

Each run puts N worker processes on one study whose objective returns at once, so all they do
is gentune's bookkeeping: ask (sampling), the scheduling checks (finished, running and queued
trials against the target; a re-queued trial first), the heartbeat, attribute writes and tell.
That is the storage's share of every real trial. The workers are gentune's `Runner` in
forked processes, each with a RandomSampler of its own seed (a model-based sampler would add
its own cost, which grows with the trials, to what is measured here).

- A throw-away PostgreSQL server on 127.0.0.1 (tests/pg_fixture.py; fsync off, as in the tests).
- Finished trials: for each --prefill count, one template database holds a study with that many
  completed trials (the first --api-prefill added with study.add_trials, the rest written in one
  transaction, see `prefill`); each run gets a fresh copy of it (CREATE DATABASE ... TEMPLATE),
  so every run starts from the same study.
- Routes: straight to PostgreSQL, and through `gentune storage-proxy` (a process of its own,
  over the same database) with the workers on grpc://127.0.0.1:PORT.
- The baseline is 1 worker on the same study and route; each N is printed against it, and the
  proxy against the straight route, all measured in this one run.
- Each worker opens the study and reads its trials before the clock starts ("join s": all N
  at once), then runs trials for --seconds (the Runner's timeout). Trials/s counts the trials
  the workers completed in that window. ms/trial is the wall time a worker spent per trial
  (N x window / trials); the CPU columns split the CPU time per trial between the workers,
  PostgreSQL's processes and the proxy; "others" is the cores that other programs on the
  machine used meanwhile.

On a machine with fewer cores than workers (the 2-core development machine: 32 workers on 2
cores), the large N measure contention, each worker waiting for a core, not parallel
speed-up; the output says so. Counts and times are bounded: (1 + len(--workers)) x routes x
len(--prefill) runs of --seconds each, plus start-up.
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

import optuna  # noqa: E402
from optuna.distributions import FloatDistribution  # noqa: E402
from optuna.trial import TrialState, create_trial  # noqa: E402
from parallel import _busy_seconds  # noqa: E402
from pg_fixture import PostgresServer, find_bin_dir, free_port  # noqa: E402

# Imported before the workers fork, so that they share these modules' pages (torch's too).
from gentune.study.runner import Runner  # noqa: E402
from gentune.study.store import make_storage  # noqa: E402

STUDY = "scale"
TARGET = 10**9  # the study's target: never reached, the runs end on their timeout
PROXY_START_SECONDS = 120.0


# -- the workers: forked once, reused by every run --------------------------------------------


class Trivial:
    """An objective that returns at once, counting its trials."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, trial: optuna.Trial) -> float:
        self.calls += 1
        return trial.suggest_float("x", 0, 1)


def _worker(index: int, conn: Connection) -> None:
    """Serve runs: ('run', url, seconds) -> 'ready'; 'go' -> (trials, cpu_s, wall_s); 'close'."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    while True:
        msg = conn.recv()
        if msg is None:
            return
        _, url, seconds = msg
        storage = make_storage(url)
        sampler = optuna.samplers.RandomSampler(seed=index)
        study = optuna.load_study(study_name=STUDY, storage=storage, sampler=sampler)
        study.get_trials(deepcopy=False)  # read the study's trials once before the clock starts
        objective = Trivial()
        conn.send("ready")
        conn.recv()  # go
        cpu0, t0 = time.process_time(), time.perf_counter()
        Runner(study, objective, n_trials=TARGET, timeout=seconds).run()
        conn.send((objective.calls, time.process_time() - cpu0, time.perf_counter() - t0))
        conn.recv()  # close: only after the parent has read the database's CPU time
        _close(storage)
        conn.send("closed")


def _close(storage) -> None:
    if hasattr(storage, "engine"):
        storage.engine.dispose()
    elif hasattr(storage, "close"):
        storage.close()


class Pool:
    """`size` worker processes, forked once; a run uses the first n of them."""

    def __init__(self, size: int):
        ctx = multiprocessing.get_context("fork")
        self.conns: list[Connection] = []
        self.procs = []
        for i in range(size):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(i, child), daemon=True)
            proc.start()
            self.conns.append(parent)
            self.procs.append(proc)

    def stop(self) -> None:
        for c in self.conns:
            c.send(None)
        for p in self.procs:
            p.join(timeout=30)


# -- CPU time of the database and the proxy ---------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # fields from the state on (the name may hold spaces)


def _cpu_seconds(pid: int, children: bool = False) -> float:
    """utime + stime of a process (fields 14, 15), and of its reaped children (16, 17)."""
    fields = _stat(pid)
    if fields is None:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def postgres_cpu(server: PostgresServer) -> float:
    """CPU seconds of the PostgreSQL server: the postmaster, its live backends, and those that
    ended (reaped into the postmaster's children's time)."""
    postmaster = int((server.data / "postmaster.pid").read_text().split()[0])
    total = _cpu_seconds(postmaster, children=True)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None and int(fields[1]) == postmaster:
                total += _cpu_seconds(int(entry.name))
    return total


# -- the study ----------------------------------------------------------------------------


def create_database(server: PostgresServer, name: str, template: str | None = None) -> str:
    import psycopg

    with psycopg.connect(
        f"host=127.0.0.1 port={server.port} user=gentune dbname=postgres", autocommit=True
    ) as conn:
        conn.execute(f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else ""))
    return server.url(name)


def drop_database(server: PostgresServer, name: str) -> None:
    import psycopg

    with psycopg.connect(
        f"host=127.0.0.1 port={server.port} user=gentune dbname=postgres", autocommit=True
    ) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def prefill(server: PostgresServer, count: int, api_trials: int) -> tuple[str, float, float]:
    """A template database whose study holds `count` completed trials.

    The first `api_trials` go through study.add_trials. It writes each trial in a transaction
    of its own (about a dozen statements), tens of ms per trial on this machine, so the rest
    are written in one transaction through Optuna's own ORM models: the same rows, which read
    back as the same trials (checked below). Returns (database, ms per add_trials trial, s in all).
    """
    from optuna.distributions import distribution_to_json
    from optuna.storages._rdb import models
    from sqlalchemy import orm

    name = f"tpl_{count}"
    url = create_database(server, name)
    storage = make_storage(url)
    study = optuna.create_study(study_name=STUDY, storage=storage)
    rng = random.Random(0)
    xs = [rng.random() for _ in range(count)]
    attrs = {"worker": "prefill:0"}
    t0 = time.perf_counter()
    head = min(api_trials, count)
    study.add_trials(
        [
            create_trial(
                state=TrialState.COMPLETE,
                params={"x": x},
                distributions={"x": FloatDistribution(0, 1)},
                value=x,
                user_attrs=attrs,
            )
            for x in xs[:head]
        ]
    )
    per_api = (time.perf_counter() - t0) / max(1, head) * 1000
    dist = distribution_to_json(FloatDistribution(0, 1))
    now = datetime.datetime.now()
    with orm.Session(storage.engine) as session:
        for number in range(head, count):
            trial = models.TrialModel(number=number, study_id=study._study_id, state=TrialState.COMPLETE)
            trial.datetime_start = trial.datetime_complete = now
            session.add(trial)
            session.add(
                models.TrialParamModel(
                    trial=trial, param_name="x", param_value=xs[number], distribution_json=dist
                )
            )
            session.add(
                models.TrialValueModel(
                    trial=trial,
                    objective=0,
                    value=xs[number],
                    value_type=models.TrialValueModel.TrialValueType.FINITE,
                )
            )
            session.add(
                models.TrialUserAttributeModel(
                    trial=trial, key="worker", value_json=json.dumps(attrs["worker"])
                )
            )
        session.commit()
    took = time.perf_counter() - t0
    trials = optuna.load_study(study_name=STUDY, storage=storage).get_trials(deepcopy=False)
    assert [t.number for t in trials] == list(range(count))
    for t in (trials[0], trials[-1]):
        assert (t.state, t.params, t.distributions, t.value, t.user_attrs) == (
            TrialState.COMPLETE,
            {"x": xs[t.number]},
            {"x": FloatDistribution(0, 1)},
            xs[t.number],
            attrs,
        ), t
    _close(storage)  # a template database must have no connection when it is copied
    return name, per_api, took


class Proxy:
    """`gentune storage-proxy` over `url`, in a process of its own."""

    def __init__(self, url: str):
        self.port = free_port()
        self.url = f"grpc://127.0.0.1:{self.port}"
        self.log = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe nobody drains
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gentune", "storage-proxy", "--storage", url, "--port", str(self.port)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )
        deadline = time.monotonic() + PROXY_START_SECONDS
        while True:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise SystemExit(f"gentune storage-proxy exited: {self.log.read()[-2000:]}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"gentune storage-proxy did not listen within {PROXY_START_SECONDS:.0f} s")
            time.sleep(0.2)

    def cpu(self) -> float:
        return _cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


# -- one run, and the tables ------------------------------------------------------------------


@dataclass
class Result:
    workers: int
    trials: int
    window: float
    worker_cpu: float
    db_cpu: float
    proxy_cpu: float
    others: float  # cores other programs used during the window
    finished_at_end: int
    joined: float  # seconds for the n workers to open the study and read its trials

    @property
    def rate(self) -> float:
        return self.trials / self.window

    def ms(self, seconds: float) -> float:
        return seconds / max(1, self.trials) * 1000


def one_run(server, pool: Pool, template: str, prefilled: int, route: str, n: int, seconds: float, k: int):
    name = f"run_{k}"
    url = create_database(server, name, template=template)
    proxy = Proxy(url) if route == "proxy" else None
    marks: dict[str, float] = {}

    def snapshot(tag: str) -> None:
        marks[f"{tag}_db"] = postgres_cpu(server)
        marks[f"{tag}_proxy"] = proxy.cpu() if proxy else 0.0
        marks[f"{tag}_busy"] = _busy_seconds()

    try:
        trials, worker_cpu, window, joined = _timed_run(
            pool, n, proxy.url if proxy else url, seconds, snapshot
        )
    finally:
        if proxy is not None:
            proxy.stop()
    db_cpu = marks["end_db"] - marks["go_db"]
    proxy_cpu = marks["end_proxy"] - marks["go_proxy"]
    ours = worker_cpu + db_cpu + proxy_cpu
    others = max(0.0, (marks["end_busy"] - marks["go_busy"] - ours) / window)
    storage = make_storage(url)
    finished = len(
        optuna.load_study(study_name=STUDY, storage=storage).get_trials(
            deepcopy=False, states=(TrialState.COMPLETE,)
        )
    )
    _close(storage)
    drop_database(server, name)
    assert finished == prefilled + trials, (finished, prefilled, trials)  # nothing lost, nothing extra
    return Result(n, trials, window, worker_cpu, db_cpu, proxy_cpu, others, finished, joined)


def _timed_run(pool: Pool, n: int, url: str, seconds: float, snapshot) -> tuple[int, float, float, float]:
    """Run the first n workers of the pool for `seconds`, with CPU snapshots at the start of the
    window ('go') and at its end ('end'). Returns (trials, summed worker CPU s, window s, and
    the seconds the workers took to open the study and read its trials, all at once)."""
    conns = pool.conns[:n]
    t_join = time.perf_counter()
    for c in conns:
        c.send(("run", url, seconds))
    for c in conns:
        assert c.recv() == "ready"
    joined = time.perf_counter() - t_join
    snapshot("go")
    t0 = time.perf_counter()
    for c in conns:
        c.send("go")
    results = [c.recv() for c in conns]
    window = time.perf_counter() - t0
    snapshot("end")
    for c in conns:
        c.send("close")
    for c in conns:
        assert c.recv() == "closed"
    return sum(r[0] for r in results), sum(r[1] for r in results), window, joined


HEADER = (
    f"  {'workers':>7} {'trials/s':>9} {'vs 1':>6} {'ms/trial':>9} {'CPU ms/trial:':>14} "
    f"{'workers':>8} {'database':>9} {'proxy':>6} {'others':>7} {'finished':>9} {'join s':>7}"
)
NOTE = (
    "  (ms/trial: a worker's wall time per trial; CPU: per trial, summed over processes; "
    "others: cores used by other programs; finished: completed trials at the end;\n"
    "   join s: seconds for the workers to open the study and read its trials, all at once, before the run)"
)


def print_row(r: Result, base: Result) -> None:
    print(
        f"  {r.workers:>7} {r.rate:>9.1f} {r.rate / base.rate:>5.2f}x {r.ms(r.window * r.workers):>9.1f} "
        f"{'':>14} {r.ms(r.worker_cpu):>8.1f} {r.ms(r.db_cpu):>9.1f} {r.ms(r.proxy_cpu):>6.1f} "
        f"{r.others:>7.2f} {r.finished_at_end:>9} {r.joined:>7.1f}",
        flush=True,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", default="2,8,32", help="worker counts to run, besides the 1-worker baseline")
    p.add_argument("--prefill", default="1000,10000", help="completed trials in the study before each run")
    p.add_argument("--seconds", type=float, default=8.0, help="length of each run")
    p.add_argument(
        "--api-prefill",
        type=int,
        default=200,
        help="prefilled trials added with study.add_trials (the rest in bulk)",
    )
    p.add_argument("--no-proxy", action="store_true", help="only the straight route to PostgreSQL")
    args = p.parse_args()
    counts = [1] + sorted({int(x) for x in args.workers.split(",")} - {1})
    prefills = [int(x) for x in args.prefill.split(",")]
    routes = ["postgresql"] if args.no_proxy else ["postgresql", "proxy"]
    if not args.no_proxy:
        from gentune.extras import require

        require("grpc", "the proxy runs of this benchmark (or pass --no-proxy)")
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise SystemExit("PostgreSQL binaries (initdb, pg_ctl) are not installed: scripts/setup.sh --test")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.perf_counter()
    cores = os.cpu_count() or 1
    print(
        f"{cores} CPU cores, load average {os.getloadavg()[0]:.2f} at start; "
        f"{len(prefills) * len(routes) * len(counts)} runs of {args.seconds:g} s; objective returns at once, "
        "RandomSampler"
    )
    if max(counts) > cores:
        print(
            f"note: {max(counts)} worker processes on {cores} cores measure contention (workers waiting "
            "for a core, and for the database's and the proxy's processes), not parallel speed-up"
        )
    server = PostgresServer(bin_dir).init()
    server.start()
    pool = Pool(max(counts))  # forked before any database connection exists in this process
    results: dict[tuple[int, str], list[Result]] = {}
    try:
        k = 0
        for prefilled in prefills:
            template, per_api, took = prefill(server, prefilled, args.api_prefill)
            print(
                f"\nprefill: {prefilled} completed trials in {took:.1f} s (the first "
                f"{min(args.api_prefill, prefilled)} with study.add_trials, {per_api:.1f} ms/trial; the rest "
                "in one transaction)",
                flush=True,
            )
            for route in routes:
                label = "straight to PostgreSQL" if route == "postgresql" else "through gentune storage-proxy"
                print(f"{prefilled} finished trials, {label}:\n{HEADER}", flush=True)
                rows = results.setdefault((prefilled, route), [])
                for n in counts:
                    k += 1
                    rows.append(one_run(server, pool, template, prefilled, route, n, args.seconds, k))
                    print_row(rows[-1], rows[0])
        print(NOTE)
        summary(results, prefills, routes, counts)
    finally:
        pool.stop()
        server.cleanup()
    print(f"load average {os.getloadavg()[0]:.2f} at end; {time.perf_counter() - started:.0f} s in all")


def summary(results, prefills, routes, counts) -> None:
    print("\nratios (trials/s), each measured in this run:")
    for prefilled in prefills:
        base = results[(prefilled, "postgresql")]
        for route in routes:
            rows = results[(prefilled, route)]
            print(
                f"  {prefilled} finished, {route}, N workers vs 1: "
                + ", ".join(f"N={r.workers} {r.rate / rows[0].rate:.2f}x" for r in rows[1:])
            )
        if "proxy" in routes:
            prox = results[(prefilled, "proxy")]
            print(
                f"  {prefilled} finished, proxy vs straight: "
                + ", ".join(f"N={a.workers} {b.rate / a.rate:.2f}x" for a, b in zip(base, prox))
            )
    if len(prefills) > 1:
        lo, hi = prefills[0], prefills[-1]
        for route in routes:
            a, b = results[(lo, route)], results[(hi, route)]
            print(
                f"  {route}: {hi} vs {lo} finished trials: "
                + ", ".join(f"N={x.workers} {y.rate / x.rate:.2f}x" for x, y in zip(a, b))
            )


if __name__ == "__main__":
    main()
