"""A warm start for the suite's command-line processes (conftest.python).

A fresh `python run.py ...` spends ~6 s importing torch, Lightning and Hydra before its
first line of work, and the suite starts over a hundred of them. This process imports all
that once, then forks one child per command: the child is a real process of its own (its
own argv, working directory, environment, stdout, stderr and exit status) that runs the
script or module as `__main__`, exactly as `python run.py` or `python -m lineage` would,
minus the import. The few tests whose subject is a cold start (tests/test_run_refusals.py,
tests/test_readme.py, tests/test_install.py) still start real interpreters.

Protocol, one JSON request per line on stdin: {argv, cwd, env, stdout, stderr, module |
script}. It answers the child's pid on one line, then its exit status on the next.
Nothing here may start a thread before forking: a forked child would inherit its locks.
"""

from __future__ import annotations

import atexit
import json
import os
import runpy
import sys
import threading
import traceback

# what every lineage command imports first (the slow part of a cold start)
import pytorch_lightning  # noqa: F401

import lineage.app  # noqa: F401
import lineage.audit  # noqa: F401
import lineage.cli  # noqa: F401
import lineage.pipeline  # noqa: F401


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)  # what the interpreter does with sys.exit("message")
    return 1


def _child(req: dict) -> None:
    code = 1
    try:
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        os.dup2(os.open(req["stdout"], flags, 0o600), 1)
        os.dup2(os.open(req["stderr"], flags, 0o600), 2)
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        extra = [p for p in req["env"].get("PYTHONPATH", "").split(os.pathsep) if p]
        if req.get("module"):  # python -m X: the working directory heads sys.path
            sys.path[0:1] = [os.getcwd(), *extra]
            sys.argv = [req["module"], *req["argv"]]
            run = lambda: runpy.run_module(req["module"], run_name="__main__", alter_sys=True)  # noqa: E731
        else:  # python SCRIPT: the script's folder heads it
            script = os.path.abspath(req["script"])
            sys.path[0:1] = [os.path.dirname(script), *extra]
            sys.argv = [req["script"], *req["argv"]]  # as given, as python keeps it
            run = lambda: runpy.run_path(script, run_name="__main__")  # noqa: E731
        try:
            run()
            code = 0
        except SystemExit as e:
            code = _exit_code(e.code)
        except BaseException:
            traceback.print_exc()
            code = 1
        threading._shutdown()  # type: ignore[attr-defined]  # as the interpreter's exit does
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)


def main() -> None:
    for line in sys.stdin:
        req = json.loads(line)
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            _child(req)
        print(pid, flush=True)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status), flush=True)


if __name__ == "__main__":
    main()
