"""`gentune storage-proxy` and grpc:// storages: workers that reach the study through Optuna's
gRPC storage proxy instead of the database.

The proxy is a real `gentune storage-proxy` process on 127.0.0.1 over a SQLite file, and the
workers real `gentune worker` processes. Skipped without grpcio (the gentune[grpc] extra, which
`.ci/run` installs through gentune[all]).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from pg_fixture import free_port

from gentune.api import RunOptions, SearchOptions, create_objective
from gentune.errors import GentuneError, StudyError
from gentune.study import storage as storage_module
from gentune.study.proxy import served_storage
from gentune.study.runner import recover_stale
from gentune.study.store import make_storage
from gentune.trial.attrs import SystemKey, TrialKey

ROOT = Path(__file__).resolve().parents[2]
OBJECTIVE = f"{ROOT / 'tests' / 'objectives' / 'logged_quadratic.py'}:objective"


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package (google) is absent
        return False


needs_grpc = pytest.mark.skipif(
    not (_installed("grpc") and _installed("google.protobuf")),
    reason="grpcio and protobuf are not installed: pip install 'gentune[grpc]' (.ci/run installs them)",
)


def gentune(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "gentune", *args],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out + err


class Proxy:
    """A `gentune storage-proxy` process serving `storage` on 127.0.0.1:`port`."""

    def __init__(self, storage: str, port: int | None = None):
        self.storage, self.port = storage, port or free_port()
        self.url = f"grpc://127.0.0.1:{self.port}"
        self.proc = gentune("storage-proxy", "--storage", storage, "--port", str(self.port))

    def wait_ready(self) -> None:
        make_storage(self.url).close()  # waits up to PROXY_WAIT_SECONDS for the proxy to answer

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return finish(self.proc, timeout=30)


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    """One proxy process for the module's tests; each test uses a study of its own."""
    served = Proxy(f"sqlite:///{tmp_path_factory.mktemp('proxied') / 'study.db'}")
    try:
        served.wait_ready()
        yield served
    finally:
        code, output = served.stop()
        assert code == 0, output  # SIGTERM stops it cleanly, as a container stop does


@needs_grpc
def test_two_workers_reach_the_target_through_the_proxy(proxy, tmp_path):
    """Create a study through the proxy (what gentune create does), then two workers (the storage
    URL from GENTUNE_STORAGE, not the command line) run it to its target: each trial run once,
    heartbeats sent through the proxy."""
    log = tmp_path / "evals.txt"
    create_objective(
        OBJECTIVE,
        study="g",
        search=SearchOptions(strategy="random", trials=8),
        run=RunOptions(storage=proxy.url, runs_dir=str(tmp_path), report=False),
    )
    env = {"GENTUNE_STORAGE": proxy.url, "EVAL_LOG": str(log), "SLOW_SECONDS": "0.3"}
    workers = [
        gentune(
            "worker",
            "--study",
            "g",
            "--no-progress",
            "--runs-dir",
            str(tmp_path),
            "--worker-index",
            str(i),
            env=env,
        )
        for i in (0, 1)
    ]
    for proc in workers:
        code, output = finish(proc)
        assert code == 0, output

    # Read the database itself, not through the proxy: the trials are really there.
    study = optuna.load_study(study_name="g", storage=proxy.storage)
    states = Counter(t.state for t in study.trials)
    assert states[TrialState.COMPLETE] == 8, states
    assert states[TrialState.RUNNING] == states[TrialState.WAITING] == 0
    evaluated = Counter(line.split()[0] for line in log.read_text().splitlines())
    assert len(evaluated) == 8 and set(evaluated.values()) == {1}  # every trial evaluated once
    for t in study.trials:
        assert t.user_attrs[TrialKey.WORKER]
        assert isinstance(t.system_attrs[SystemKey.HEARTBEAT], float)  # sent through the proxy


@needs_grpc
@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_a_trial_whose_heartbeat_lapsed_is_requeued_through_the_proxy(proxy):
    study = optuna.create_study(study_name="lost", storage=make_storage(proxy.url))
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    # its worker sent one heartbeat long ago, then vanished (another machine, powered off)
    study._storage.set_trial_system_attr(trial._trial_id, SystemKey.HEARTBEAT, time.time() - 3600)
    recover_stale(study)
    trials = study.get_trials(deepcopy=False)
    assert trials[0].state == TrialState.FAIL
    assert trials[1].state == TrialState.WAITING and trials[1].user_attrs[TrialKey.RETRY_OF] == 0
    assert trials[1].system_attrs["fixed_params"] == trials[0].params  # the same parameters again


@needs_grpc
def test_a_worker_rides_out_a_proxy_restart(tmp_path):
    """The proxy is stopped and comes back on its port 2 s later: a call made meanwhile is
    retried until it goes through. (In-process proxies, which start in a moment.)"""
    from optuna.storages._grpc.server import make_server

    served = served_storage(f"sqlite:///{tmp_path / 'study.db'}")
    port = free_port()
    first = make_server(served, "127.0.0.1", port)
    first.start()
    study = optuna.create_study(study_name="r", storage=make_storage(f"grpc://127.0.0.1:{port}"))
    study.set_user_attr("before", 1)
    first.stop(grace=None).wait()
    second = make_server(served, "127.0.0.1", port)
    restart = threading.Timer(2.0, second.start)
    restart.start()
    try:
        study.set_user_attr("after", 2)
        assert study.user_attrs == {"before": 1, "after": 2}
    finally:
        restart.join()
        second.stop(grace=None)


@needs_grpc
def test_storage_proxy_refuses_a_busy_port_and_a_journal(proxy, tmp_path):
    # grpc binds with SO_REUSEPORT: unchecked, a second proxy would share the port with the first
    busy = gentune("storage-proxy", "--storage", proxy.storage, "--port", str(proxy.port))
    code, output = finish(busy, timeout=60)
    assert code == 2 and f"cannot listen on 127.0.0.1:{proxy.port}" in output and "--port" in output, output
    assert "Traceback" not in output
    with pytest.raises(StudyError, match="cannot serve a journal file"):
        served_storage(f"journal://{tmp_path}/s.log")


@needs_grpc
def test_no_proxy_at_the_url_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(storage_module, "PROXY_WAIT_SECONDS", 0.5)
    port = free_port()
    with pytest.raises(StudyError) as info:
        make_storage(f"grpc://127.0.0.1:{port}")
    message = str(info.value)
    assert f"no storage proxy answered at grpc://127.0.0.1:{port}" in message
    assert f"gentune storage-proxy --storage URL --host 127.0.0.1 --port {port}" in message


@pytest.mark.parametrize("url", ["grpc://127.0.0.1", "grpc://:13000", "grpc://h:13000/db", "grpc://h:port"])
def test_a_grpc_url_needs_a_host_and_a_port(url):
    with pytest.raises(StudyError, match="names the storage proxy's host and port"):
        make_storage(url)


def test_without_grpcio_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "grpc", None)  # import grpc now fails as if it were absent
    with pytest.raises(GentuneError, match=r"pip install 'gentune\[grpc\]'"):
        make_storage("grpc://127.0.0.1:13000")
