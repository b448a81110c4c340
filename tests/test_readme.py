"""Executable documentation: every command the README shows runs, as written.

The commands are read from README.md itself (indented and fenced code blocks), never retyped
here, so the README cannot document a command that fails. What the test adds is only what
makes a command fit CI on a CPU: Hydra overrides that shrink the data and the sampling (they
come after the README's own, so they win), and concrete files for the README's placeholders
(PARENT, SUSPECT, ...: model files made by the commands before). A command that cannot run
here at all is listed in NOT_HERE with the reason, and a test checks the list matches.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import HANG_S, ROOT, SHARED_DATA

# Later commands read earlier ones' outputs, so the tests of this file run in order, in one
# process (the Makefile's `--dist loadfile`).
pytestmark = pytest.mark.slow

README = ROOT / "README.md"
PROGRAMS = ("python ", "lineage ", "make ", "bash ", "PY=")
# command prefix -> why it does not run in this test
NOT_HERE = {
    "make run": "`python run.py` after the set-up; the set-up is what CI itself runs",
    "make test": "the test suite itself",
    "python -m experiments.run_all --preset": "a whole zoo and its experiments: 30-60 min each",
    "python -m experiments.recipe_shift --preset": "a whole zoo under every null: minutes; "
    "tests/test_recipe_shift.py runs its smallest case through the same command line",
    "python -m benchmarks.bench_remote": "a label-only MNIST LeNet audit three ways: minutes; "
    "its table is in the README",
    "python -m benchmarks.bench_closeness": "the closeness speed table on MNIST LeNet: minutes; "
    "tests/test_benchmarks.py runs its smallest case",
    "lineage serve suspect.safetensors": "a server in the background: tests/test_remote.py "
    "(test_readme_commands_run_as_written) starts it and runs the audit beside it",
    "lineage compare parent.safetensors http://": "the audit of that server: test_remote.py",
}
# appended to every Hydra command: small data, few points, no W&B
FAST = [
    "logger=none",
    "data.limit=300",
    "data.epochs=3",
    "determination.probe_points=200",
    "closeness.max_points=100",
    "closeness.min_points=50",
    "closeness.n_boot=200",
]
FAST_COMPARE = [o for o in FAST if o.startswith(("closeness.", "determination."))]


def readme_commands(text: str) -> list[str]:
    """Shell commands of the README's code blocks, continuation lines joined, comments cut."""
    out: list[str] = []
    fenced = False
    pending = ""
    for line in text.splitlines():
        if line.strip().startswith("```"):
            fenced = not fenced
            continue
        if not (fenced or line.startswith("    ")):
            pending = ""
            continue
        body = pending + line.strip()
        pending = ""
        if body.endswith("\\"):
            pending = body[:-1].rstrip() + " "
            continue
        body = re.split(r"\s+#\s", body, maxsplit=1)[0].strip()
        if body.startswith(PROGRAMS):
            out.append(body)
    return out


def readme_blocks(text: str, lang: str) -> list[str]:
    """The fenced blocks of one language, in order."""
    return re.findall(rf"^```{lang}\n(.*?)^```", text, flags=re.S | re.M)


COMMANDS = readme_commands(README.read_text())
PYTHON = readme_blocks(README.read_text(), "python")
# Blocks whose first line is `# path` are files the commands after them use; the others
# are programs, run as written.
FILES = [b for b in PYTHON + readme_blocks(README.read_text(), "yaml") if b.startswith("# ")]
PROGRAMS = [b for b in PYTHON if not b.startswith("# ")]


def skipped(cmd: str) -> str | None:
    if "hydra/launcher=submitit_slurm" in cmd and not shutil.which("sbatch"):
        return "no SLURM here (sbatch missing); CI starts one (scripts/slurm_up.sh)"
    return next((why for pre, why in NOT_HERE.items() if cmd.startswith(pre)), None)


def test_every_exception_names_a_documented_command():
    for prefix in NOT_HERE:
        assert any(c.startswith(prefix) for c in COMMANDS), f"README has no {prefix!r} any more"


def test_the_readme_documents_the_headline_commands():
    joined = "\n".join(COMMANDS)
    for needle in ("run.py -m", "lineage report", "lineage compare", "model._target_="):
        assert needle in joined
    assert any("lineage.calibrate" in b and "lineage.judge" in b for b in PROGRAMS)
    assert {b.splitlines()[0] for b in FILES} >= {"# my_nets.py", "# my_conf/model/mynet.yaml"}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """One folder for all commands, in README order, so later ones see earlier outputs,
    holding the files the README shows."""
    d = tmp_path_factory.mktemp("readme")
    for block in FILES:
        path = d / block.splitlines()[0][2:].strip()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(block)
    (d / "scripts").symlink_to(ROOT / "scripts")
    (d / "experiments").symlink_to(ROOT / "experiments")
    (d / "benchmarks").symlink_to(ROOT / "benchmarks")
    (d / "run.py").symlink_to(ROOT / "run.py")
    return d


def placeholders(workdir: Path) -> dict[str, str]:
    """Concrete files for the README's placeholders, from the runs made so far."""
    runs = sorted((workdir / "outputs").rglob("metrics.json"), key=lambda p: p.stat().st_mtime)
    if not runs:
        return {}
    m = json.loads(runs[0].read_text())
    return {
        "PARENT.safetensors": m["parent.path"],
        "SUSPECT.safetensors": m["derived.path"],
        "INDEPENDENT.safetensors": m["independent.0.path"],
        "PARENT": m["parent.path"],
        "SUSPECT": m["derived.path"],
    }


def as_argv(cmd: str, workdir: Path) -> list[str]:
    for k, v in sorted(placeholders(workdir).items(), key=lambda kv: -len(kv[0])):
        cmd = re.sub(rf"(?<![\w/.-]){re.escape(k)}(?![\w.-])", v, cmd)
    argv = shlex.split(cmd.replace("../shared/data", str(SHARED_DATA)))
    bindir = Path(sys.executable).parent
    if argv[0] == "python":
        argv[0] = sys.executable
    elif argv[0] == "lineage":
        argv[0] = str(bindir / "lineage")
    hydra = "run.py" in cmd or argv[1:2] == ["run"]
    if hydra:
        argv += FAST
    elif "compare" in argv:
        argv += FAST_COMPARE
    return argv


def readme_env(workdir: Path) -> dict[str, str]:
    # LINEAGE_DATA: where ../shared/data is from the checkout (the presets read it);
    # PYTHONPATH: the README's own modules (my_nets.py), as it says to do
    env = {**os.environ, "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "0"}
    env["LINEAGE_DATA"] = str(SHARED_DATA)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(workdir), os.environ.get("PYTHONPATH")]))
    return env


@pytest.mark.parametrize("program", PROGRAMS, ids=[f"python-{i}" for i in range(len(PROGRAMS))])
def test_readme_python_runs_as_written(program, workdir):
    """The API example: run verbatim, then its verdict checked."""
    check = "\nassert isinstance(v.is_lineage, bool) and v.is_lineage, v.explain()\n"
    r = subprocess.run(
        [sys.executable, "-c", program + check],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=HANG_S,
        env=readme_env(workdir),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "lineage" in r.stdout and "closeness" in r.stdout  # v.explain() printed


@pytest.mark.parametrize("cmd", COMMANDS)
def test_readme_command_runs(cmd, workdir):
    why = skipped(cmd)
    if why:
        pytest.skip(f"not run here: {why}")
    argv = as_argv(cmd, workdir)
    env = readme_env(workdir)
    r = subprocess.run(argv, cwd=workdir, capture_output=True, text=True, timeout=HANG_S, env=env)
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"{cmd}\n{out[-3000:]}"
    assert "Traceback" not in out, out[-3000:]
    assert "Warning" not in out, out[-3000:]  # no warning from our own configs
    if "-m" in argv and "run.py" in cmd:
        name = next((a[5:] for a in argv if a.startswith("name=")), "default")
        sweep = workdir / "outputs" / "sweeps" / name
        n = len(list(sweep.glob("*/metrics.json")))
        jobs = 1
        for arg in cmd.split():
            if "=" in arg and "," in arg.split("=", 1)[1] and not arg.startswith("hydra"):
                jobs *= len(arg.split("=", 1)[1].split(","))
        assert n == jobs, f"{n} metrics.json for {jobs} jobs"
        assert f"{jobs} jobs, {jobs} ok" in r.stdout
