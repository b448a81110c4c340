import atexit
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lineage.config import RootConf

ROOT = Path(__file__).resolve().parents[1]
# a job trains its parent and this many references (RootConf.n_independent)
N_REFERENCES = RootConf().n_independent
SHARED_DATA = ROOT.parent / "shared" / "data"
# The one limit a test puts on time: a hang guard, far (10x+) above the slowest honest run of
# anything a test waits for (a CLI job, a pip install) on a loaded 2-core machine. A test never
# asserts how fast the machine is; speed goals live in benchmarks/.
HANG_S = 1800
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# Tiny models: one thread avoids oversubscription when test processes run side by side.
torch.set_num_threads(1)
# Under `pytest -n K` each worker gets its own share of the cores; the CLI subprocesses a
# test starts inherit it, so their default `threads` (the cores they may use) cannot
# oversubscribe the machine either.
_worker = os.environ.get("PYTEST_XDIST_WORKER", "")
if _worker.startswith("gw") and hasattr(os, "sched_setaffinity"):
    _cpus = sorted(os.sched_getaffinity(0))
    _k = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if len(_cpus) >= _k > 1:
        os.sched_setaffinity(0, _cpus[int(_worker[2:]) % _k :: _k])


@pytest.fixture(scope="session")
def digits_dm():
    from lineage.data import build_datamodule

    return build_datamodule("digits", limit=600, batch_size=64)


FAST_TRAIN = {
    "epochs": 4,
    "lr": 3e-3,
    "optimizer": "adam",
    "scheduler": "none",
    "accelerator": "cpu",
    "progress": False,
}


@pytest.fixture(scope="session")
def fast_train():
    return dict(FAST_TRAIN)


def run_py(*overrides: str, cwd: Path = ROOT, timeout: int = HANG_S, env: dict | None = None):
    """Run the real CLI in a process of its own, as a user would (a warm start: `python`)."""
    e = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0", **(env or {})}
    return python(str(ROOT / "run.py"), *overrides, cwd=cwd, timeout=timeout, env=e)


class _Warm:
    """This worker's tests/warm.py: it forks each command from an interpreter that has
    already imported torch, Lightning and lineage (see its docstring)."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None

    def run(self, req: dict, timeout: float, cmd: list[str]) -> int:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = subprocess.Popen(
                [sys.executable, str(ROOT / "tests" / "warm.py")],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                cwd=ROOT,
                bufsize=0,
            )
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write((json.dumps(req) + "\n").encode())
        pid = int(self._line(HANG_S))
        try:
            return int(self._line(timeout))
        except TimeoutError:
            os.kill(pid, 9)
            self._line(HANG_S)
            raise subprocess.TimeoutExpired(cmd, timeout) from None

    def _line(self, timeout: float) -> bytes:
        """One line of the answer, read unbuffered so that select() sees what is left."""
        import select

        assert self.proc and self.proc.stdout
        fd, line = self.proc.stdout.fileno(), b""
        while not line.endswith(b"\n"):
            if not select.select([fd], [], [], timeout)[0]:
                raise TimeoutError
            byte = os.read(fd, 1)
            if not byte:
                raise RuntimeError("tests/warm.py ended (see its stderr above)")
            line += byte
        return line

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            assert self.proc.stdin
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


_WARM = _Warm()
atexit.register(_WARM.close)


def python(
    *argv: str, cwd: Path = ROOT, timeout: float = HANG_S, env: dict | None = None
) -> subprocess.CompletedProcess:
    """`python ARGV` (`SCRIPT ARGS` or `-m MODULE ARGS`, as python reads them) as a process of
    its own, with its output captured as text: forked from this worker's warm interpreter
    (_Warm)."""
    import tempfile

    module = argv[1] if argv[0] == "-m" else None
    args = list(argv[2:] if module else argv[1:])
    cmd = [sys.executable, *argv]
    with tempfile.TemporaryDirectory() as d:
        req = {
            "argv": args,
            "cwd": str(cwd),
            "env": dict(os.environ if env is None else env),
            "stdout": f"{d}/out",
            "stderr": f"{d}/err",
            **({"module": module} if module else {"script": argv[0]}),
        }
        code = _WARM.run(req, timeout, cmd)
        out, err = (Path(d, n).read_text(errors="replace") for n in ("out", "err"))
    return subprocess.CompletedProcess(cmd, code, out, err)


def lineage_here(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """`lineage ARGS` (`lineage run ...` is run.py's job) in this process: what the command
    prints on stdout and stderr and its exit code, for tests of what a refused command says.
    A fresh process pays ~6 s to import torch and Lightning per refusal; each file that
    tests refusals keeps one real subprocess for the end-to-end claim (one line, exit 2)."""
    import contextlib
    import io
    import logging

    from lineage.cli import main

    out, err = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    handlers, level, argv, here = root.handlers[:], root.level, sys.argv[:], os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        os.chdir(here)
        sys.argv = argv
        root.handlers[:] = handlers  # Hydra's job logging set its own up
        root.setLevel(level)
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def _hung(e: subprocess.TimeoutExpired) -> str:
    cmd = e.cmd if isinstance(e.cmd, str) else " ".join(map(str, e.cmd))
    return f"hung: {cmd} (no exit within {e.timeout:g} s)"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    try:
        return (yield)
    except subprocess.TimeoutExpired as e:
        pytest.fail(_hung(e), pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    try:
        return (yield)
    except subprocess.TimeoutExpired as e:
        pytest.fail(_hung(e), pytrace=False)


# ------------------------------------------------------------ a loaded machine, on purpose

BURN_ENV = "LINEAGE_TEST_BURN"


class Burners:
    """`n` processes that spin a core each, so the suite meets the load a shared machine has
    (`make test-loaded`): a test that passes only on a quiet machine is timing it."""

    def __init__(self, n: int):
        self.procs = [
            subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)
        ]

    def stop(self) -> None:
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait()


def pytest_addoption(parser):
    parser.addoption(
        "--burn",
        type=int,
        default=int(os.environ.get(BURN_ENV) or 0),
        help=f"busy-loop processes beside the whole session (default: ${BURN_ENV} or 0)",
    )


def pytest_configure(config):
    # once per session: in the xdist controller (or the lone process), never in its workers
    n = config.getoption("--burn")
    if n > 0 and not hasattr(config, "workerinput"):
        config._lineage_burners = Burners(n)


def pytest_unconfigure(config):
    burners = getattr(config, "_lineage_burners", None)
    if burners is not None:
        burners.stop()
