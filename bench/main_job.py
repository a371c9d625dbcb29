"""The README's main job, timed: `gentune tune --dataset digits`, exactly as its first line runs it.

    python bench/main_job.py [--quick] [-- EXTRA TUNE OPTIONS]

Three runs, one after another, each in a fresh folder (its own runs/), all with one fresh
GENTUNE_HOME in a temporary folder:

1. fresh:  default threads, nothing cached: the feature extractor is trained first;
2. cached: default threads, the extractor (and the reference features) cached by run 1;
3. omp1:   as run 2, under OMP_NUM_THREADS=1 (and MKL/OpenBLAS at 1), the advice for shared
           machines; gentune's own thread choice must never be slower than this;
4. one:    as run 2 with --workers 1: every trial in the one process, as before gentune ran a
           CPU study in one worker process per core (settings.auto_workers).

For each it prints the wall seconds (process start to exit), gentune's CPU seconds, the best FID
and the cores other processes used meanwhile (from /proc/stat, less this benchmark's own), so a
number taken on a loaded machine says so. The ratios are cached / omp1 in wall and in CPU time
(below 1: the default is faster), and cached / one. The last line is one JSON object with all of it. `--quick`
passes --trials 4 (a smoke check of the script, not the README's figure); options after `--` go
to every run of gentune tune.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _busy_seconds() -> float:
    """CPU seconds all processes on the machine have used since boot (from /proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _children_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _best_fid(folder: Path) -> float | None:
    found = sorted((folder / "runs").glob("*/best.json"))
    if not found:
        return None
    metrics = json.loads(found[0].read_text()).get("metrics") or {}
    return metrics.get("fid")


def run_once(label: str, home: Path, extra: list[str], one_thread: bool = False) -> dict:
    """One `gentune tune --dataset digits` in a fresh folder; its seconds, best FID and load."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    env["GENTUNE_HOME"] = str(home)
    env["PYTHONPATH"] = str(ROOT)
    if one_thread:
        env.update({k: "1" for k in THREAD_VARS})
    with tempfile.TemporaryDirectory(prefix=f"gentune-main-{label}-") as tmp:
        cmd = [sys.executable, "-m", "gentune", "tune", "--dataset", "digits", *extra]
        busy0, own0, t0 = _busy_seconds(), _children_seconds(), time.perf_counter()
        done = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        cpu = _children_seconds() - own0
        others = (_busy_seconds() - busy0) - cpu
        if done.returncode != 0:
            sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
            raise SystemExit(f"{label}: gentune tune exited with {done.returncode}")
        fid = _best_fid(Path(tmp))
    result = {
        "run": label,
        "seconds": round(seconds, 1),
        "best_fid": fid,
        "cpu_seconds": round(cpu, 1),
        "other_processes_cores": round(max(0.0, others) / seconds, 2),
    }
    print(
        f"{label:7s} {result['seconds']:7.1f} s ({result['cpu_seconds']} CPU s)   best FID {fid}   "
        f"other processes used {result['other_processes_cores']} cores meanwhile",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="--trials 4: check the script, not the figure")
    parser.add_argument("extra", nargs="*", help="options passed to every gentune tune (after --)")
    args = parser.parse_args()
    extra = (["--trials", "4"] if args.quick else []) + list(args.extra)
    with tempfile.TemporaryDirectory(prefix="gentune-home-") as home:
        runs = [
            run_once("fresh", Path(home), extra),
            run_once("cached", Path(home), extra),
            run_once("omp1", Path(home), extra, one_thread=True),
            run_once("one", Path(home), [*extra, "--workers", "1"]),
        ]
    by = {r["run"]: r for r in runs}
    ratio = by["cached"]["seconds"] / by["omp1"]["seconds"]
    cpu_ratio = by["cached"]["cpu_seconds"] / max(by["omp1"]["cpu_seconds"], 1e-9)
    print(
        f"default threads / OMP_NUM_THREADS=1 (both cached): {ratio:.2f} in wall time, "
        f"{cpu_ratio:.2f} in CPU time (steadier when other processes load the machine)"
    )
    one = by["cached"]["seconds"] / by["one"]["seconds"]
    print(f"default / --workers 1 (both cached): {one:.2f} in wall time")
    print(
        json.dumps(
            {
                "command": "gentune tune --dataset digits " + " ".join(extra),
                "cores": os.cpu_count(),
                "runs": runs,
                "ratio_default_to_omp1": round(ratio, 3),
                "cpu_ratio_default_to_omp1": round(cpu_ratio, 3),
                "ratio_default_to_one_process": round(one, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
