"""Outputs that survive faults (issue #8): SIGKILL at random points of a run, four parallel
jobs on one zoo and lineage record, and the same config and seed giving the same metrics.

Every check runs the real CLI (run.py) in subprocesses on the smoke preset, with 400
digits per split and 3 epochs instead of 8: runs short enough to kill often (the parent
reaches ~45% test accuracy; these tests are about files and determinism, not verdicts).
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import HANG_S, N_REFERENCES, ROOT, run_py
from test_pipeline import KEYS, metrics_files, smoke

from lineage import models
from lineage.utils import stable_hash
from lineage.zoo import Zoo

pytestmark = pytest.mark.slow

# atomic_write's temp files: `.<final name>.<mkstemp's random part>.tmp`, beside the final one.
TEMP = re.compile(r"^\.(?P<final>.+)\.[A-Za-z0-9_]+\.tmp$")


def job(tmp: Path, *extra: str) -> list[str]:
    return smoke(
        tmp, "logger=none", "data.epochs=3", "data.limit=400", "modification=noise", *extra
    )


def popen(overrides: list[str]) -> subprocess.Popen:
    env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0"}
    return subprocess.Popen(
        [sys.executable, str(ROOT / "run.py"), *overrides],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def assert_outputs_valid(root: Path) -> list[Path]:
    """No partial file is visible under `root`: every model loads (load verifies the tensors'
    checksum), every JSON parses, every JSONL line parses and ends its line, Hydra's YAMLs
    parse. Leftover atomic_write temp files are allowed, but only under their temp name,
    which no reader looks for. Returns those leftovers."""
    leftovers = []
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        if TEMP.match(p.name):
            leftovers.append(p)
        elif p.suffix == ".safetensors":
            models.load(p)
        elif p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix == ".jsonl":
            text = p.read_text()
            assert text.endswith("\n"), f"{p}: torn last line"
            for line in text.splitlines():
                json.loads(line)
        elif p.suffix == ".yaml":
            yaml.safe_load(p.read_text())
        else:
            # run.log (Hydra's), summary.txt, empty lock files; a `.corrupt` model would mean
            # the zoo once found a partial file, which atomic writes must rule out.
            assert p.suffix in (".log", ".lock", ".txt"), f"unexpected file {p}"
    return leftovers


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.open()] if path.exists() else []


def assert_each_model_trained_once(zoo: Path) -> list[dict[str, Any]]:
    record = lines(zoo / "record.jsonl")
    twice = [k for k, n in Counter(e["id"] for e in record).items() if n > 1]
    assert not twice, f"trained more than once: {twice}"
    return record


def assert_each_edge_once(zoo: Path) -> list[dict[str, Any]]:
    edges = lines(zoo / "lineage.jsonl")
    assert len(edges) == len({e["child"] for e in edges}), edges
    return edges


def comparable(metrics: dict[str, Any], *roots: Path) -> dict[str, Any]:
    """metrics.json without what legitimately differs between two runs of one config.

    Rule: a key goes when its last dotted part is `seconds` or `time` or ends in `_s`
    (wall-clock timings), or when its value is a string holding one of `roots` (paths into
    the run's own output and zoo directories). Everything else must match exactly.
    """

    def timing(key: str) -> bool:
        last = key.rsplit(".", 1)[-1]
        return last in ("seconds", "time") or last.endswith("_s")

    def located(v: Any) -> bool:
        return isinstance(v, str) and any(str(r) in v for r in roots)

    return {k: v for k, v in metrics.items() if not timing(k) and not located(v)}


def differences(a: dict[str, Any], b: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Keys whose values differ; as JSON text, so that a NaN equals a NaN."""
    keys = sorted(a.keys() | b.keys())
    return {k: (a.get(k), b.get(k)) for k in keys if json.dumps(a.get(k)) != json.dumps(b.get(k))}


def test_comparable_drops_only_timings_and_own_paths(tmp_path):
    m = {
        "time.total_s": 3.2,
        "derived.evidence.closeness.seconds": 1.0,
        "derived.path": f"{tmp_path}/zoo/models/d-1.safetensors",
        "derived.evidence.closeness.score": 0.5,
        "data": "digits",
        "time.note": "kept: not a timing",
    }
    assert comparable(m, tmp_path) == {
        "derived.evidence.closeness.score": 0.5,
        "data": "digits",
        "time.note": "kept: not a timing",
    }


SOURCE_CHANGED = "lineage/ or conf/ changed while the test ran: the runs ran different code"


def source_digest() -> str:
    """The code and configs a run executes: runs to compare must have run the same."""
    files = sorted(
        [*(ROOT / "lineage").rglob("*.py"), *(ROOT / "lineage" / "conf").rglob("*.yaml")]
    )
    return stable_hash({str(f.relative_to(ROOT)): f.read_text() for f in files})


@pytest.fixture(scope="module")
def fresh_runs(tmp_path_factory):
    """The same config and seed, run twice side by side, each with its own zoo and dir."""
    code = source_digest()
    roots = [tmp_path_factory.mktemp(f"fresh{i}") for i in range(2)]
    procs = [popen(job(r, "ratio=0.1", f"hydra.run.dir={r / 'run'}")) for r in roots]
    assert [p.wait(timeout=HANG_S) for p in procs] == [0, 0]
    return code, [(r, json.loads((r / "run" / "metrics.json").read_text())) for r in roots]


def test_same_config_and_seed_give_identical_metrics(fresh_runs):
    code, ((ra, a), (rb, b)) = fresh_runs
    assert source_digest() == code, SOURCE_CHANGED
    assert a["time.total_s"] > 0 and a["derived.path"] != b["derived.path"]  # two real runs
    ca, cb = comparable(a, ra), comparable(b, rb)
    assert differences(ca, cb) == {}
    # what the comparison covers: the verdicts and scores, not just the labels
    assert {
        "derived.evidence.closeness.score",
        "derived.evidence.basin.barrier",
        "config_hash",
    } <= set(ca)
    assert {"derived.evidence.closeness.ci_low", "independent.0.evidence.closeness.score"} <= set(
        ca
    )


def written_since(t0: float, *paths: Path) -> bool:
    return any(p.exists() and p.stat().st_mtime > t0 for p in paths)


@pytest.mark.heavy
def test_sigkill_at_random_points_then_resume(tmp_path, fresh_runs):
    """SIGKILL four runs of one job, each a random delay after a point of its life, with
    the zoo and outputs checked after every kill; then a run completes and matches an
    uninterrupted one. force=true makes every rerun derive, judge and write again."""
    rng = random.Random(8)
    run_dir, zoo = tmp_path / "run", tmp_path / "zoo"
    args = job(tmp_path, "ratio=0.1", "force=true", f"hydra.run.dir={run_dir}")

    def anchor(kind: str, t0: float) -> bool:
        zoo_models = list((zoo / "models").glob("*.safetensors"))
        return {
            # past imports and data loading: the parent is training
            "config": lambda: written_since(t0, run_dir / "config.json"),
            # a model file was just renamed into place: record append, next model's start
            "model": lambda: written_since(t0, *zoo_models),
            # the derived model is saved: determination and closeness are running
            "derived": lambda: written_since(t0, *(zoo / "models").glob("d-*.safetensors")),
        }[kind]()

    plan: list[tuple[str, tuple[float, float]]] = [
        ("config", (0.2, 2.0)),
        ("model", (0.0, 0.02)),
        ("model", (0.0, 0.02)),
        ("derived", (0.1, 2.0)),
    ]
    outcomes = []
    for kind, (lo, hi) in plan:
        t0 = time.time()
        p = popen(args)
        deadline = t0 + HANG_S
        while p.poll() is None and not anchor(kind, t0) and time.time() < deadline:
            time.sleep(0.01)
        assert time.time() < deadline, f"never reached {kind!r}"
        time.sleep(rng.uniform(lo, hi))
        p.send_signal(signal.SIGKILL)
        rc = p.wait(timeout=60)
        outcomes.append((kind, rc, len(list((zoo / "models").glob("*.safetensors")))))
        assert rc in (0, -signal.SIGKILL), outcomes
        assert_outputs_valid(tmp_path)
        assert_each_model_trained_once(zoo)
        assert_each_edge_once(zoo)
    print("kills (anchor, rc, models in zoo):", outcomes)
    assert sum(rc == -signal.SIGKILL for _, rc, _ in outcomes) >= 3, outcomes

    r = run_py(*args, timeout=HANG_S)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((run_dir / "metrics.json").read_text())
    assert [k for k in KEYS if k not in m] == []
    assert_outputs_valid(tmp_path)
    for f in (zoo / "models").glob("*.safetensors"):
        models.load(f)  # the checksum of every model in the zoo verifies
    record = assert_each_model_trained_once(zoo)
    roles = {e["role"] for e in record}
    assert roles <= {"parent", "independent"} and len(record) <= 1 + N_REFERENCES
    assert [e["child"] for e in assert_each_edge_once(zoo)] == [m["derived.id"]]
    # killed and resumed, the job gives exactly what an uninterrupted run gave
    code, ((root, fresh), _) = fresh_runs
    assert source_digest() == code, SOURCE_CHANGED
    assert differences(comparable(m, tmp_path), comparable(fresh, root)) == {}


def test_write_killed_before_rename_leaves_old_file_and_an_ignored_temp(tmp_path):
    """A kill between atomic_write's write and its rename (held there by a blocking fsync):
    the final name still holds the old content, the new bytes sit in a temp-named file that
    no reader looks for, and the zoo trains the model rather than read the temp file."""
    target = tmp_path / "metrics.json"
    target.write_text('{"old": true}\n')
    zoo = Zoo(tmp_path / "zoo")
    spec = {"what": "a zoo model whose first save was killed"}
    child = f"""
import os, sys, time
from lineage import models, utils

def stuck(fd):
    print("in fsync", flush=True)
    time.sleep(60)

os.fsync = stuck
which = sys.argv[1]
if which == "json":
    utils.write_json({str(target)!r}, {{"new": True}})
else:
    m = models.build("mlp", 3, 1, (2, 2), hidden=[4])
    models.save(m, {str(zoo.path(Zoo.model_id(spec)))!r}, {{"role": "parent"}})
"""
    for which in ("json", "model"):
        p = subprocess.Popen(
            [sys.executable, "-c", child, which], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        assert p.stdout is not None and p.stdout.readline() == "in fsync\n"
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)

    assert json.loads(target.read_text()) == {"old": True}
    temps = assert_outputs_valid(tmp_path)
    assert sorted(TEMP.match(t.name)["final"] for t in temps) == sorted(
        ["metrics.json", zoo.path(Zoo.model_id(spec)).name]
    )
    # the write itself had finished: only the rename was missing
    json_temp = next(t for t in temps if t.name.startswith(".metrics.json."))
    assert json.loads(json_temp.read_text()) == {"new": True}
    assert metrics_files(tmp_path) == [target]  # the temp file is not a result
    trained: list[bool] = []

    def train() -> tuple[Any, dict]:
        trained.append(True)
        return models.build("mlp", 3, 1, (2, 2), hidden=[4]), {}

    _, _, now = zoo.get_or_train(spec, train, "parent")
    assert now and trained == [True]
    models.load(zoo.path(Zoo.model_id(spec)))


@pytest.mark.heavy
def test_four_parallel_jobs_share_one_zoo_and_record(tmp_path):
    sweep = tmp_path / "sweep"
    r = run_py(
        "-m",
        *job(
            tmp_path,
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=4",
            "ratio=0.1,0.2,0.3,0.4",
            f"hydra.sweep.dir={sweep}",
        ),
        timeout=HANG_S,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert_outputs_valid(tmp_path)
    results = [json.loads(f.read_text()) for f in metrics_files(sweep)]
    assert sorted(m["ratio"] for m in results) == [0.1, 0.2, 0.3, 0.4]
    zoo = tmp_path / "zoo"
    # the parent and both references: trained once for the four jobs, loaded by the rest
    record = assert_each_model_trained_once(zoo)
    assert sorted(e["role"] for e in record) == ["independent"] * N_REFERENCES + ["parent"]
    assert {m["parent.id"] for m in results} == {e["id"] for e in record if e["role"] == "parent"}
    # four derived models, each edge recorded exactly once, from that parent
    edges = assert_each_edge_once(zoo)
    assert sorted(e["child"] for e in edges) == sorted(m["derived.id"] for m in results)
    assert {e["parent"] for e in edges} == {results[0]["parent.id"]}
    assert sorted(e["ratio"] for e in edges) == [0.1, 0.2, 0.3, 0.4]
    for m in results:  # the file each job reports is the one in the zoo, and it verifies
        _, meta = models.load(m["derived.path"])
        assert meta["id"] == m["derived.id"] and meta["ratio"] == m["ratio"]


@pytest.mark.parametrize("launcher", ["basic", "joblib"])
def test_absolute_paths_in_overrides_keep_each_job_one_level_under_the_sweep(tmp_path, launcher):
    # issue 26: `/` in an override value made nested job folders, which the summary missed
    # (it said "0 jobs" and exit 0 although both jobs failed)
    sweep = tmp_path / "sweep"
    roots = [str(tmp_path / "x" / "nodata"), "/y/nodata"]
    r = run_py(
        "-m",
        *job(tmp_path, f"hydra/launcher={launcher}", "data=mnist", f"data.root={','.join(roots)}"),
        f"hydra.sweep.dir={sweep}",
    )
    assert r.returncode == 1, r.stderr[-3000:]
    assert "2 jobs, 0 ok, 0 skipped, 2 failed" in r.stdout, r.stdout[-3000:]
    errors = sorted(sweep.rglob("error.json"))
    assert [e.parent.parent for e in errors] == [sweep, sweep]
    assert sorted(json.loads(e.read_text())["overrides"][-1] for e in errors) == sorted(
        f"data.root={root}" for root in roots
    )
    assert all("%2F" in e.parent.name and "MNIST" in e.read_text() for e in errors)
    (line,) = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert line.startswith("error: 2 of 2 jobs failed: ")
