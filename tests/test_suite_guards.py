"""The suite's own guards: a hang is named, `--burn N` / $LINEAGE_TEST_BURN runs N busy
loops beside the whole session and reaps them (`make test-loaded`), and a command forked
from the warm interpreter (conftest.python) gets what a fresh process would."""

import json
import os
import subprocess
import sys
import time

import pytest
from conftest import HANG_S, ROOT, Burners, _hung, python


def cpu_ticks(pid: int) -> int:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def burning(pids: list[int]) -> bool:
    """Every pid gains CPU time (polls until it has, or the hang guard ends it)."""
    start = {p: cpu_ticks(p) for p in pids}
    deadline = time.monotonic() + HANG_S
    while time.monotonic() < deadline:
        if all(cpu_ticks(p) > start[p] for p in pids):
            return True
        time.sleep(0.05)
    return False


def gone(pid: int) -> bool:
    return not os.path.exists(f"/proc/{pid}")  # a zombie (killed, never reaped) is still there


def test_a_timeout_names_the_command_that_hung():
    e = subprocess.TimeoutExpired([sys.executable, "run.py", "data=digits"], 1800)
    assert _hung(e) == f"hung: {sys.executable} run.py data=digits (no exit within 1800 s)"


def test_burners_spin_and_are_reaped():
    b = Burners(2)
    pids = [p.pid for p in b.procs]
    try:
        assert len(set(pids)) == 2 and all(p.poll() is None for p in b.procs)
        assert burning(pids)
    finally:
        b.stop()
    assert [p.returncode for p in b.procs] == [-9, -9]
    assert all(gone(p) for p in pids)


def test_burn_option_runs_beside_the_session(request, tmp_path):
    """Inner session ($LINEAGE_TEST_BURN=2): its burners spin during its test, gone after."""
    out = os.environ.get("LINEAGE_BURN_PROBE")
    if out:  # the inner session: report its burners
        burners = request.config._lineage_burners
        pids = [p.pid for p in burners.procs]
        assert len(pids) == 2 and burning(pids)
        with open(out, "w") as f:
            json.dump(pids, f)
        return
    probe = tmp_path / "pids.json"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"{__file__}::test_burn_option_runs_beside_the_session",
        ],
        cwd=ROOT,
        env={**os.environ, "LINEAGE_BURN_PROBE": str(probe), "LINEAGE_TEST_BURN": "2"},
        capture_output=True,
        text=True,
        timeout=HANG_S,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    pids = json.loads(probe.read_text())
    assert len(pids) == 2 and all(gone(p) for p in pids)


SHOW = """
import json, os, sys
print(json.dumps({"cwd": os.getcwd(), "argv": sys.argv, "path0": sys.path[0],
                  "env": os.environ.get("PROBE"), "name": __name__,
                  "warm": "pytorch_lightning" in sys.modules}))  # imported before the fork
print("to stderr", file=sys.stderr)
sys.exit(int(sys.argv[1]))
"""


def test_a_warm_command_gets_its_own_argv_cwd_env_output_and_exit_status(tmp_path):
    script = tmp_path / "show.py"
    script.write_text(SHOW)
    env = {**os.environ, "PROBE": "here"}
    r = python(str(script), "3", "x y", cwd=tmp_path, env=env)
    assert r.returncode == 3 and r.stderr == "to stderr\n"
    got = json.loads(r.stdout)
    assert got == {"cwd": str(tmp_path), "argv": [str(script), "3", "x y"], "warm": True,
                   "path0": str(tmp_path), "env": "here", "name": "__main__"}  # fmt: skip
    r = python("-m", "json.tool", "--no-such-flag", cwd=tmp_path)  # python -m MODULE, argparse
    assert r.returncode == 2 and "--no-such-flag" in r.stderr
    assert json.loads(python(str(script), "0", env=os.environ).stdout)["env"] is None


def test_a_warm_command_that_hangs_is_killed_and_the_next_one_runs(tmp_path):
    script = tmp_path / "hang.py"
    script.write_text("import time\ntime.sleep(600)\n")
    with pytest.raises(subprocess.TimeoutExpired):
        python(str(script), timeout=1)  # a hang guard's own test: 600 s against 1
    (tmp_path / "ok.py").write_text("print('next')\n")
    assert python(str(tmp_path / "ok.py")).stdout == "next\n"
