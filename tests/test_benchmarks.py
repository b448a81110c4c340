"""Every benchmark's smallest case runs and prints its table (never timed here: the
figures are the benchmark's to print, not a test's to assert). Adding a benchmark is one
entry in TABLES: its table's header and a row with numbers."""

import importlib
import os
import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
N = r"-?(\d+(\.\d*)?(e[-+]?\d+)?|inf|nan)"  # a number as the tables print it

# module -> (strings of the table's header, a row that must appear, with {N} for numbers)
TABLES = {
    "bench_closeness": (
        ["search", "ms/point", "evals/point", "x vs ref 1t"],
        r"batched: bracket \+ margin root search \(1 threads\)\s+{N}\s+{N}\s+{N}",
    ),
    "bench_determination": (
        ["modification", "basin", "p_basin", "closeness", "p_inherited", "verdict"],
        r"noise\s+0\.1000\s+{N}\s+{N}\s+{N}\s+{N}",
    ),
    "bench_judge": (
        [
            "| judging | seconds/suspect | total_s |",
            "identical verdicts and numbers: True",
            "| evidence | s/suspect | calibration_s |",
            "verdicts unchanged: True",
        ],  # fmt: skip
        r"\| calibrate once, then judge\(calibration=cal\) \| {N} \| {N} \|",
    ),
    "bench_load_memory": (
        ["| file MB | peak MB warm | warm / file | peak MB cold | cold / file | load s |"],
        r"\| 0\.1 \| {N} \| {N} \| {N} \| {N} \| {N} \|",
    ),
    "bench_modifications": (
        ["modification", "ratio", "accuracy", "effect", "seconds"],
        r"pruning\s+0\.5\s+{N}\s+sparsity=0\.5\s+{N}",
    ),
    "bench_remote": (
        ["suspect", "method", "queries", "queries/point", "= in-process", "from cache"],
        # the audit over HTTP answers as the in-process one does
        r"prune:0\.3\s+remote \(HTTP\)\s+{N}\s+{N}\s+{N}\s+{N}\s+{N}\s+{N}\s+{N}\s+True \(",
    ),
    "bench_run": (
        ["job", "seconds", "parent acc", "lineage", "closeness"],
        r"python run\.py \(cached zoo\)\s+{N}\s+{N}",
    ),
    "bench_threads": (
        ["| case | jobs | wall_s | vs alone |"],
        r"\| two at once: run 2 \| 2 \| {N} \| {N} \|",
    ),
    "bench_zoo": (
        ["| build | pairs | wall_s | vs 1 job |", "same verdict on every pair: True"],
        r"\| 2 jobs \| 12 \| {N} \| {N} \|",
    ),
    "reference_closeness": (
        ["point", "d_source", "d_suspect", "adv_source", "adv_suspect", "matched"],
        r"\n\s*0\s+{N}\s+{N}\s+{N}\s+{N}\s+(True|False)",
    ),
}
# Each starts `lineage run` three times over, or builds a zoo twice (fresh processes:
# imports dominate): heavy, so `make test-all` runs them and CI's 10-minute suite does not.
SLOW = {"bench_run", "bench_threads", "bench_zoo"}
# Benchmarks whose smallest case runs beside the tests of what they measure.
ELSEWHERE = {
    "bench_serve_memory": "tests/test_remote_fuzz.py::test_bench_serve_memory_smallest_case",
    "bench_cli_light": "tests/test_cli_light.py::test_the_benchmark_smallest_case_runs",
}


def test_every_benchmark_is_listed():
    found = {p.stem for p in (ROOT / "benchmarks").glob("*.py") if p.stem != "__init__"}
    assert found == set(TABLES) | set(ELSEWHERE)
    for where in ELSEWHERE.values():
        path, name = where.split("::")
        assert f"def {name}(" in (ROOT / path).read_text(), where


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """A benchmark may set torch threads and environment defaults: undo them after."""
    threads, env = torch.get_num_threads(), dict(os.environ)
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    torch.set_num_threads(threads)
    os.environ.clear()
    os.environ.update(env)


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=[pytest.mark.heavy] if n in SLOW else []) for n in TABLES]
)
def test_smallest_case_prints_its_table(name, isolated, capsys):
    module = importlib.import_module(f"benchmarks.{name}")
    module.smallest(isolated)
    out = capsys.readouterr().out
    header, row = TABLES[name]
    for h in header:
        assert h in out, f"{name}: {h!r} not in\n{out}"
    assert re.search(row.replace("{N}", N), out), f"{name}: no row like {row!r} in\n{out}"
