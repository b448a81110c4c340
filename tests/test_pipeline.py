"""End-to-end: the real CLI (run.py, Hydra, launchers, W&B offline) in subprocesses."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import HANG_S, N_REFERENCES, ROOT, lineage_here, python, run_py
from wandb_offline import logged_table, summary_and_history

from lineage.evaluate import evidence

pytestmark = pytest.mark.slow

# Documented flat keys every job's metrics.json holds (README, "metrics.json").
KEYS = [
    "modification",
    "ratio",
    "data",
    "model",
    "seed",
    "git_sha",
    "config_hash",
    "parent.id",
    "parent.path",
    "parent.accuracy",
    "derived.id",
    "derived.path",
    "derived.accuracy",
    "derived.verdict.is_lineage",
    "derived.verdict.says.basin",
    "derived.verdict.says.closeness",
    "derived.evidence.basin.barrier",
    "derived.evidence.basin.threshold",
    "derived.evidence.basin.route",
    "derived.evidence.closeness.score",
    "derived.evidence.closeness.match_rate",
    "derived.evidence.closeness.mean_distance",
    "derived.evidence.closeness.n_points",
    "derived.evidence.closeness.ci_low",
    "derived.evidence.closeness.ci_high",
    "derived.evidence.closeness.seconds",
    "independent.accuracy",
    "independent.evidence.basin.min",
    "independent.false_positives",
    "independent.evidence.closeness.max",
    "independent.0.id",
    "independent.0.verdict.is_lineage",
    "independent.0.evidence.basin.barrier",
    "independent.0.evidence.closeness.score",
    "independent.1.id",
    "time.parent_s",
    "time.derive_s",
    "time.basin_s",
    "time.closeness_s",
    "time.total_s",
]


def smoke(tmp_path, *extra):
    return ["experiment=smoke", f"paths.zoo={tmp_path / 'zoo'}", *extra]


def metrics_files(d: Path):
    return sorted(d.rglob("metrics.json"))


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("single")
    r = run_py(*smoke(tmp, "modification=pruning", "ratio=0.5", f"hydra.run.dir={tmp / 'run'}"))
    assert r.returncode == 0, r.stderr[-3000:]
    return tmp, r, json.loads((tmp / "run" / "metrics.json").read_text())


def test_single_run_writes_every_documented_key(single):
    tmp, r, m = single
    missing = [k for k in KEYS if k not in m]
    assert not missing, missing
    assert m["modification"] == "pruning" and m["ratio"] == 0.5
    assert abs(m["derived.sparsity"] - 0.5) <= 0.01
    assert m["derived.verdict.is_lineage"] is True
    assert m["independent.false_positives"] == 0
    assert 0.0 <= m["derived.evidence.closeness.score"] <= 1.0
    assert Path(m["derived.path"]).exists() and Path(m["parent.path"]).exists()
    assert "lineage?" in r.stdout  # the console summary table
    # the Preflight callback resolved its directories (it used to warn and check nothing)
    assert "Preflight" not in r.stderr and "Warning" not in r.stderr, r.stderr[-2000:]
    # provenance: the composed config and git SHA are recorded with the results
    assert (tmp / "run" / ".hydra" / "config.yaml").exists()
    assert json.loads((tmp / "run" / "config.json").read_text())["ratio"] == 0.5
    assert m["git_sha"] != ""


def test_the_readme_main_job_on_the_default_config(tmp_path):
    # `make run` = `python run.py`: digits, MLP, finetune 0.5, three references
    r = run_py(f"paths.zoo={tmp_path / 'zoo'}", f"hydra.run.dir={tmp_path / 'run'}", "logger=none")
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert (m["modification"], m["ratio"], m["data"], m["model"]) == (
        "finetune",
        0.5,
        "digits",
        "mlp",
    )
    assert m["derived.verdict.is_lineage"] is True
    assert m["derived.evidence.closeness.score"] > m["independent.evidence.closeness.max"]
    # each reference, judged leave-one-out against the other two, is not lineage
    assert [m[f"independent.{i}.verdict.is_lineage"] for i in range(3)] == [False] * 3
    assert m["independent.false_positives"] == 0


def test_wandb_offline_run_holds_summary(single):
    tmp, _, m = single
    summary, history, config = summary_and_history(tmp / "run")
    assert summary["derived.evidence.closeness.score"] == pytest.approx(
        m["derived.evidence.closeness.score"]
    )
    assert summary["parent.accuracy"] == pytest.approx(m["parent.accuracy"])
    assert summary["derived.verdict.is_lineage"] is True
    assert not [k for k in summary if k.endswith(".path")]  # no machine's absolute paths
    # each model's training is its own series, on its own step, under its model's prefix
    for who in ("parent", *(f"independent/{i}" for i in range(N_REFERENCES))):
        assert {f"{who}/train/loss", f"{who}/val/acc", f"{who}/step"} <= history, who
    assert not [
        k for k in history if k.startswith(("independent-", "parent-", "independent/train"))
    ]
    # the interpolation paths: one line plot of the loss (its table logged once, with it)
    assert "determination/loss_path_table/nrows" in history
    assert not [k for k in history if k.startswith("determination/curves")]
    plot = config["_wandb/visualize/determination/loss_path"]["panel_config"]
    assert plot["fieldSettings"] == {"x": "alpha", "y": "loss", "stroke": "pair"}
    pairs = {row[0] for row in logged_table(tmp / "run", "determination/loss_path_table")["data"]}
    assert "derived.basin" in pairs and "independent.0.basin" in pairs
    # the verdict table: a row per pair, each kind's p-value and headline value
    t = logged_table(tmp / "run", "determination/verdicts")
    rows = {row[0]: dict(zip(t["columns"], row)) for row in t["data"]}
    assert list(rows) == ["derived", *(f"independent.{i}" for i in range(N_REFERENCES))]
    d = rows["derived"]
    assert d["answer"] == "lineage" and d["p_value"] == pytest.approx(m["derived.verdict.p_value"])
    for k in evidence.kinds():
        assert d[f"{k.name}.p"] == m.get(f"derived.verdict.p.{k.name}"), k.name
        assert d[f"{k.name}.{k.headline}"] == m.get(f"derived.evidence.{k.name}.{k.headline}")
    assert all(r["answer"] == "not lineage" for p, r in rows.items() if p != "derived")
    assert config["_tags"] == ["pruning", "digits", "mlp"]
    assert config["_run_name"] == "modification=pruning,ratio=0.5"
    assert config["ratio"] == 0.5 and config["modification"]["name"] == "pruning"


def test_compare_gives_the_same_numbers(single):
    tmp, _, m = single
    r = python(
        "-m", "lineage", "compare", m["parent.path"], m["derived.path"], "--zoo", str(tmp / "zoo"),
        "--json", "experiment=smoke",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    c = json.loads(r.stdout.strip().splitlines()[-1])
    for k in (
        "verdict.is_lineage",
        "evidence.basin.barrier",
        "evidence.basin.threshold",
        "evidence.basin.route",
        "evidence.closeness.score",
        "evidence.closeness.match_rate",
        "evidence.closeness.n_points",
        "evidence.closeness.ci_low",
        "evidence.closeness.ci_high",
    ):
        want = m[f"derived.{k}"]
        if isinstance(want, float):
            assert c[k] == pytest.approx(want, rel=1e-6, abs=1e-9), k
        else:
            assert c[k] == want, k


@pytest.mark.heavy
def test_logger_none_and_rerun_skips(tmp_path):
    args = smoke(
        tmp_path,
        "logger=none",
        "modification=noise",
        "ratio=0.1",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    r = run_py(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert not (tmp_path / "run" / "wandb").exists()
    first = (tmp_path / "run" / "metrics.json").read_text()
    r = run_py(*args)
    assert r.returncode == 0 and "skipping" in r.stderr + r.stdout
    assert (tmp_path / "run" / "metrics.json").read_text() == first
    r = run_py(*args, "force=true")
    assert r.returncode == 0 and "skipping" not in r.stderr + r.stdout


# joblib and submitit_local: ~50 s each, run by `make test-all`; CI runs joblib through the
# README's 12-job sweep (tests/test_readme.py)
LAUNCHERS = [
    "basic",
    pytest.param("joblib", marks=pytest.mark.heavy),
    pytest.param("submitit_local", marks=pytest.mark.heavy),
]


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_multirun_launchers(tmp_path, launcher):
    # No hydra.sweep.dir given: the configured default must resolve under every launcher.
    sweep = tmp_path / "outputs" / "sweeps" / "smoke"
    args = [
        "-m",
        *smoke(
            tmp_path, "logger=none", f"hydra/launcher={launcher}", "modification=finetune,noise"
        ),
    ]
    r = run_py(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr and "Warning" not in r.stderr, r.stderr[-3000:]
    files = metrics_files(sweep)
    assert len(files) == 2
    assert {json.loads(f.read_text())["modification"] for f in files} == {"finetune", "noise"}
    # output subdirs are named from the overrides
    assert {f.parent.name for f in files} == {"modification=finetune", "modification=noise"}
    # one summary table at the end, no per-job tables
    assert "2 jobs, 2 ok, 0 skipped, 0 failed" in r.stdout
    assert r.stdout.count("lineage?") == 0
    # the parent (and each reference) was trained exactly once for the whole sweep
    record = [json.loads(line) for line in (tmp_path / "zoo" / "record.jsonl").open()]
    assert sum(e["role"] == "parent" for e in record) == 1
    assert len({e["id"] for e in record}) == len(record) == 1 + N_REFERENCES
    mtimes = [f.stat().st_mtime_ns for f in files]
    r = run_py(*args, cwd=tmp_path)
    assert r.returncode == 0
    assert [f.stat().st_mtime_ns for f in metrics_files(sweep)] == mtimes
    assert "2 jobs, 0 ok, 2 skipped, 0 failed" in r.stdout


def test_sweep_killed_then_resumed(tmp_path):
    sweep = tmp_path / "sweep"
    args = [
        sys.executable,
        str(ROOT / "run.py"),
        "-m",
        *smoke(
            tmp_path,
            "logger=none",
            "modification=noise",
            "ratio=0.1,0.2,0.3",
            f"hydra.sweep.dir={sweep}",
        ),
    ]
    env = {**os.environ, "WANDB_MODE": "offline"}
    p = subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + HANG_S
    while not metrics_files(sweep) and time.time() < deadline and p.poll() is None:
        time.sleep(0.2)
    assert metrics_files(sweep), "first job never finished"
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=HANG_S)
    done_before = {f: f.read_text() for f in metrics_files(sweep)}
    assert 1 <= len(done_before) < 3
    r = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=HANG_S)
    assert r.returncode == 0, r.stderr[-3000:]
    files = metrics_files(sweep)
    assert len(files) == 3
    for f, text in done_before.items():  # finished work was kept, not redone
        assert f.read_text() == text
    edges = [json.loads(line) for line in (tmp_path / "zoo" / "lineage.jsonl").open()]
    assert len(edges) == len({e["child"] for e in edges}) == 3


@pytest.mark.parametrize(
    "override,message",
    [
        ("modification=bogus", "error: unknown modification 'bogus' (choose from: adversarial,"),
        ("ratio=abc", "could not be converted to Float"),
        ("ratio=1.5", "outside its range [0, 1]"),
        ("data.limit=-3", "data.limit"),
        ("closeness.d_max=abc", "closeness.d_max=abc: Value 'abc'"),  # schema type, composing
        ("closeness.ci_tol=1.5", "closeness.ci_tol=1.5 is outside its range (0, 1)"),
    ],
)
def test_bad_config_gives_clear_error(tmp_path, override, message):
    # in this process: a real process refuses in tests/test_run_refusals.py
    r = lineage_here(
        "run", *smoke(tmp_path, "logger=none", override, f"hydra.run.dir={tmp_path / 'r'}")
    )
    assert r.returncode != 0
    assert message in r.stderr + r.stdout
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "zoo" / "record.jsonl").exists()  # failed before any training


@pytest.mark.parametrize("where", ["zoo", "run"])
def test_unwritable_output_dir(tmp_path, where):
    # A path under a regular file cannot be created, even by root (CI runs as root).
    blocker = tmp_path / "file"
    blocker.write_text("")
    target = {
        "zoo": [f"paths.zoo={blocker / 'zoo'}", f"hydra.run.dir={tmp_path / 'r'}"],
        "run": [f"hydra.run.dir={blocker / 'run'}"],
    }[where]
    r = lineage_here("run", *smoke(tmp_path, "logger=none", *target))
    assert r.returncode != 0
    what = {"zoo": "zoo", "run": "output directory (hydra.run.dir)"}[where]
    assert f"error: cannot write to the {what}" in r.stderr  # said by the Preflight callback
    assert "Traceback" not in r.stderr
    assert "training" not in r.stderr  # refused before any data was read or model trained


def test_unwritable_sweep_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    r = lineage_here(
        "run", "-m", *smoke(tmp_path, "logger=none", f"hydra.sweep.dir={blocker / 'sweep'}")
    )
    assert r.returncode != 0
    assert "error: cannot write to the sweep directory (hydra.sweep.dir)" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "zoo" / "record.jsonl").exists()


def test_bad_job_in_a_sweep_records_why_and_the_sweep_goes_on(tmp_path):
    # Valid at composition, refused by the modification: job #0 fails, job #1 must still run,
    # and the sweep's exit status says that a job failed (issue 21, item 11).
    sweep = tmp_path / "sweep"
    r = run_py(
        "-m",
        *smoke(tmp_path, "logger=none", "data.limit=400", "data.epochs=3", "modification=pruning"),
        "modification.method=l1_structured",
        "ratio=1.0,0.5",
        f"hydra.sweep.dir={sweep}",
    )
    assert r.returncode == 1, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    (line,) = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert line.startswith("error: 1 of 2 jobs failed: ") and line.endswith("ratio=1.0"), line
    # the sweep's summary table gives each job's status and, for the failed one, why
    table = r.stdout.split("1 ok, 0 skipped, 1 failed")[1].splitlines()
    (row,) = [ln for ln in table if "ratio=1.0" in ln]
    assert " failed " in row and "pruning: l1_structured needs ratio < 1" in row
    (bad,) = sweep.rglob("error.json")
    err = json.loads(bad.read_text())
    assert err["error"] == "pruning: l1_structured needs ratio < 1 (every layer keeps a channel)"
    assert "ratio=1.0" in err["overrides"]
    assert not (bad.parent / "metrics.json").exists()
    (good,) = metrics_files(sweep)
    assert json.loads(good.read_text())["ratio"] == 0.5


def test_compare_shows_progress_when_not_a_terminal(single, tmp_path):
    """References to train: a log line per stage and per tenth of the epochs on stderr
    (captured, so not a terminal), and stdout holds only the result."""
    _, _, m = single
    r = python(
        "-m", "lineage", "compare", m["parent.path"], m["derived.path"],
        "--references", "1", "--zoo", str(tmp_path / "zoo"), "--json", "experiment=smoke",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    err = r.stderr
    assert "reference 1/1 (seed 1000): loading from" in err
    assert "training independent (mlp on digits, seed 1000)" in err
    assert "epoch 8/8" in err and "reference 1/1: m-" in err and "trained" in err
    assert "judging: determination and closeness" in err
    json.loads(r.stdout)  # nothing but the JSON result on stdout


def test_compare_trains_default_references_for_a_parent_with_no_recorded_recipe(single, tmp_path):
    """An auditor's parent file that does not say how it was trained: `--references N`
    trains N references with the default recipe, says so, and the verdict carries the
    caveat that its null assumes the parent was trained that way."""
    from lineage.models import io

    _, _, m = single
    model, meta = io.load(m["parent.path"])
    foreign = tmp_path / "foreign.safetensors"
    io.save(model, foreign, {k: v for k, v in meta.items() if k not in ("spec", "arch", "format")})
    assert "spec" not in io.load(foreign)[1]
    r = python(
        "-m", "lineage", "compare", str(foreign), m["derived.path"],
        "--references", "4", "--zoo", str(tmp_path / "zoo"), "--json", "experiment=smoke",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert "its training recipe is not known here" in r.stderr
    out = json.loads(r.stdout)
    assert out["references"] == 4 and out["calibrated"] is True
    assert out["references_recipe"] == "default"
    assert "trained with the default recipe" in out["verdict.caveat"]
    assert "trained with the default recipe" in out["explanation"]


def test_compare_bad_inputs(single, tmp_path):
    _, _, m = single

    def compare(*a):
        return python("-m", "lineage", "compare", *a)

    r = compare(str(tmp_path / "missing.safetensors"), m["derived.path"])
    assert r.returncode == 2 and "not found" in r.stderr and "Traceback" not in r.stderr
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 64)
    r = compare(m["parent.path"], str(bad))
    assert r.returncode == 2 and "bad.safetensors" in r.stderr
    r = compare(m["parent.path"], m["derived.path"], "closeness.ci_tol=1.5")
    assert r.returncode == 2 and "closeness.ci_tol=1.5 is outside its range" in r.stderr


def test_compare_different_tasks_needs_data(single, tmp_path):
    """A transfer-derived model (digits 5-9) against its digits 0-9 parent: say which task."""
    from lineage import models
    from lineage.modifications import derive

    _, _, m = single
    parent, pmeta = models.load(m["parent.path"])
    from lineage.data import build_datamodule

    dm = build_datamodule("digits", limit=200)
    d = derive(parent, dm, {"name": "transfer", "epochs": 0}, 0.5, 0)
    child = models.save(
        d.model,
        tmp_path / "child.safetensors",
        {"id": "c", "data": {"name": "digits", "classes": [5, 6, 7, 8, 9]}},
    )
    r = python("-m", "lineage", "compare", m["parent.path"], str(child))
    assert r.returncode == 2 and "different tasks" in r.stderr and "--data" in r.stderr
    assert "Traceback" not in r.stderr


def test_help_lists_only_groups_a_user_can_pick(tmp_path):
    r = lineage_here("run", "--help", cwd=tmp_path)
    assert r.returncode == 0
    groups = r.stdout.split("== Configuration groups ==")[1].split("== Config ==")[0]
    assert "modification: adversarial, chain" in groups and "model: hf_vit, lenet, mlp" in groups
    assert "schema" not in groups  # the typed schemas are not options
