"""Hardening, round two (issue 21): each test is one defect found on 00e9200, checked
through the behaviour a user sees (an exit code, a message, a file, a verdict, memory).

The subprocess tests put the real limits on a child: RLIMIT_FSIZE makes the kernel cut a
write short and then refuse it (EFBIG), as a full disk does; RLIMIT_AS bounds memory;
/proc/self/clear_refs resets the resident-set high-water mark so a child can measure the
peak of one call. Python ignores SIGXFSZ, so a refused write is an OSError, not a kill.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import os
import random
import resource
import signal
import struct
import subprocess
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path

import pytest
import torch
from conftest import HANG_S, ROOT, lineage_here, python, run_py

from lineage import models
from lineage.errors import LineageError
from lineage.zoo import Zoo

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "0"}


def child(
    code: str,
    *args: str,
    fsize: int | None = None,
    address_space: int | None = None,
    timeout: int = HANG_S,
) -> subprocess.CompletedProcess:
    """Run `code` in a fresh Python under the given resource limits."""

    def limits() -> None:
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, resource.RLIM_INFINITY))
        if address_space is not None:
            resource.setrlimit(resource.RLIMIT_AS, (address_space, resource.RLIM_INFINITY))

    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**ENV, "MALLOC_ARENA_MAX": "2"},
        preexec_fn=limits,
    )


def cli(*args: str, timeout: int = HANG_S) -> subprocess.CompletedProcess:
    return python("-m", "lineage", *args, timeout=timeout, env=ENV)


def one_error_line(stderr: str) -> str:
    """The single `error: ...` line a refused command prints (and nothing like a traceback)."""
    assert "Traceback" not in stderr, stderr[-2000:]
    lines = [ln for ln in stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, stderr[-2000:]
    return lines[0]


def tiny(num_classes: int = 10, hidden=(8,), seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return models.build("mlp", num_classes, 1, 8, hidden=list(hidden)).eval()


def split(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def rewrite_meta(path: Path, change) -> Path:
    header, body = split(path)
    meta = json.loads(header["__metadata__"]["lineage"])
    change(meta)
    header["__metadata__"]["lineage"] = json.dumps(meta)
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + body)
    return path


# ------------------------------------------ 1: an uncalibrated comparison is never a verdict


def test_compare_without_references_says_undetermined_never_lineage(tmp_path):
    # no recorded recipe, no --reference: nothing to calibrate on, so no bare verdict
    p = models.save(tiny(), tmp_path / "p.safetensors", {"id": "p", "data": {"name": "digits"}})
    r = cli("compare", str(p), str(p), "closeness.max_points=100", "closeness.min_points=50")
    assert r.returncode == 0, r.stderr[-2000:]
    first = r.stdout.splitlines()[0]
    assert first.startswith("determination: undetermined") and "uncalibrated" in first, first
    r = cli("compare", str(p), str(p), "--json", "closeness.max_points=100")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["calibrated"] is False and out["verdict"] == "undetermined"


# --------------------------------- 4, 5: untrusted metadata is checked before it steers a run

SPEC = {"data": {"name": "digits"}}
HOSTILE_META = {  # metadata of the parent file -> what the one error line names
    "path_as_data": ({"data": {"name": "../../elsewhere/evil"}}, "which is not a registered one"),
    "ansi_data": ({"data": {"name": "dig\x1b[2J\nits"}}, "'dig\\x1b[2J\\nits', which is not"),
    "batch_size_0": ({"spec": {**SPEC, "data": {"batch_size": 0}}}, "batch_size"),
    "val_fraction_5": ({"spec": {**SPEC, "data": {"val_fraction": 5}}}, "val_fraction"),
    "epochs_text": ({"spec": {**SPEC, "data": {"epochs": "abc"}}}, "spec.data: Value 'abc'"),
    "classes_text": ({"spec": {**SPEC, "data": {"classes": "abc"}}}, "spec.data: Invalid value"),
    "huge_seed": ({"seed": 10**30, "spec": SPEC}, "seed"),
    "spec_not_a_mapping": ({"spec": "x"}, "spec"),
    "record_text": ({"record": "x"}, "record"),
    "chain_of_numbers": ({"record": {"chain": [1]}}, "record"),
}


@pytest.mark.parametrize("case", list(HOSTILE_META), ids=list(HOSTILE_META))
def test_hostile_parent_metadata_is_one_line(tmp_path, case):
    extra, fragment = HOSTILE_META[case]
    meta = {"id": "p", "data": {"name": "digits"}, **extra}
    p = models.save(tiny(), tmp_path / "p.safetensors", meta)
    # in this process: the real processes below refuse files too
    r = lineage_here("compare", str(p), str(p), "--references", "1", "--zoo", str(tmp_path / "zoo"))
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    line = one_error_line(r.stderr)
    assert fragment in line, line
    assert "\x1b" not in r.stderr and not (tmp_path / "zoo" / "record.jsonl").exists()


# ------------------------------------------------------------------- 2: the zoo's key


def test_zoo_refuses_another_models_file_under_its_name(tmp_path, caplog):
    zoo = Zoo(tmp_path)
    calls = []

    def trainer(seed):
        def train():
            calls.append(seed)
            return tiny(seed=seed), {"seed": seed}

        return train

    spec_a, spec_b = {"seed": 0, "k": "a"}, {"seed": 1000, "k": "a"}
    _, meta_a, _ = zoo.get_or_train(spec_a, trainer(0), "parent")
    _, meta_b, _ = zoo.get_or_train(spec_b, trainer(1000), "independent")
    # a reference's file copied over the parent's file name
    zoo.path(meta_a["id"]).write_bytes(zoo.path(meta_b["id"]).read_bytes())
    with caplog.at_level(logging.WARNING, logger="lineage.zoo"):
        model, meta, trained = zoo.get_or_train(spec_a, trainer(0), "parent")
    assert meta["id"] == meta_a["id"] and trained and calls == [0, 1000, 0]
    assert f"holds model '{meta_b['id']}', not {meta_a['id']}" in caplog.text
    assert zoo.path(meta_a["id"]).with_suffix(".mismatch").is_file()
    assert torch.equal(model.head.weight, tiny(seed=0).head.weight)
    # the right id but another recorded configuration: not this key's model either
    rewrite_meta(zoo.path(meta_a["id"]), lambda m: m["spec"].update(k="b"))
    _, meta, trained = zoo.get_or_train(spec_a, trainer(0), "parent")
    assert trained and meta["spec"] == spec_a
    _, _, trained = zoo.get_or_train(spec_a, trainer(0), "parent")
    assert not trained  # a file that is the model asked for is used as it is


# --------------------------------------------------- 3: abstention on a learnt-nothing suspect


@pytest.fixture(scope="module")
def trained_parent(digits_dm, fast_train):
    from lineage.training import train_classifier

    torch.manual_seed(0)
    m = models.build("mlp", 10, 1, 8, hidden=[32])
    return train_classifier(m, digits_dm, fast_train, 0)[0]


def test_near_constant_suspect_makes_the_basin_test_abstain(trained_parent, digits_dm):
    from lineage.evaluate.basin import determine
    from lineage.modifications import derive

    x, y = digits_dm.test.x, digits_dm.test.y
    keep = (y != 0) | (torch.arange(len(y)) % 4 == 0)  # unbalanced: few zeros
    x, y = x[keep], y[keep]
    freq = torch.bincount(y, minlength=10).float() / len(y)
    # The best constant guess: it predicts the class frequencies, so its loss is their
    # entropy, below ln 10 on an unbalanced probe set, and the loss rule alone misses it.
    constant = tiny(hidden=[32])
    with torch.no_grad():
        for p in constant.parameters():
            p.zero_()
        constant.head.bias.copy_(freq.clamp_min(1e-6).log())
    pruned = derive(trained_parent, digits_dm, {"name": "pruning"}, 1.0, 0).model
    for suspect in (constant, pruned):
        r = determine(trained_parent, suspect, x, y, {})
        assert r.loss_suspect < math.log(10) or suspect is pruned
        assert r.abstains and r.below_threshold is None, r
        assert "no basin evidence" in r.reason and r.reason
    fine = derive(trained_parent, digits_dm, {"name": "noise"}, 0.05, 0).model
    r = determine(trained_parent, fine, x, y, {})
    assert (
        not r.abstains and r.below_threshold is True and r.reason == ""
    )  # a working model is still judged


# ------------------------------------------- 6, 7: memory bounded by the file, not the metadata

MEASURE = """
import json, sys
import torch
from lineage import models
from lineage.errors import LineageError

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024

out = []
for path in sys.argv[1:]:
    open("/proc/self/clear_refs", "w").write("5")
    base = status("VmRSS:")
    try:
        models.load(path)
        result = "loaded"
    except LineageError as e:
        result = "refused: " + str(e)
    out.append({"result": result, "peak": status("VmHWM:") - base})
print(json.dumps(out))
"""


def measured(*paths: Path, **limits) -> list[dict]:
    r = child(MEASURE, *map(str, paths), **limits)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_hostile_arch_kwargs_allocate_nothing(tmp_path):
    files = []
    for hidden in ([6000, 6000], [40000, 40000]):
        p = models.save(tiny(), tmp_path / f"h{hidden[0]}.safetensors", {"id": "x"})
        files.append(rewrite_meta(p, lambda m, h=hidden: m["arch"]["kwargs"].update(hidden=h)))
    assert all(f.stat().st_size < 110_000 for f in files)
    for r in measured(*files, address_space=2**30):
        assert r["result"].startswith("refused: ") and "architecture" in r["result"], r
        assert r["peak"] < 30 * 2**20, r


@pytest.mark.slow
def test_loading_peaks_under_twice_the_file_size(tmp_path):
    torch.manual_seed(0)
    path = models.save(
        models.build("mlp", 10, 1, 8, hidden=[3000, 3000]), tmp_path / "big.safetensors"
    )
    size = path.stat().st_size
    assert size > 35 * 2**20
    (r,) = measured(path)
    assert r["result"] == "loaded"
    assert r["peak"] < 2 * size, f"peak {r['peak'] / size:.2f}x the file size"


# ----------------------------------------------------------------- 8: the gzip bomb


def gzip_bomb(path: Path, dims: list[int], inflated: int) -> Path:
    """An IDX header declaring `dims`, followed by `inflated` zero bytes, gzipped."""
    head = bytes([0, 0, 8, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(head)
        zeros = bytes(2**20)
        for _ in range(inflated // len(zeros)):
            f.write(zeros)
    return path


def test_gzip_bomb_is_refused_within_the_size_its_header_declares(tmp_path):
    from lineage.data.mnist import read_idx

    cases = [
        (gzip_bomb(tmp_path / "a-idx3-ubyte.gz", [10, 28, 28], 96 * 2**20), "file has more"),
        (gzip_bomb(tmp_path / "b-idx3-ubyte.gz", [60000, 3000, 3000], 2**20), "more than an"),
    ]
    assert all(p.stat().st_size < 2**20 for p, _ in cases)
    for path, fragment in cases:
        tracemalloc.start()
        try:
            with pytest.raises(LineageError, match=fragment):
                read_idx(path)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 20 * 2**20, f"{peak / 2**20:.0f} MB to refuse a {path.stat().st_size} B file"


# ------------------------------------------------------ 9: appends: whole, or loud


APPEND = """
import sys
from lineage.utils import append_line
path = sys.argv[1]
try:
    append_line(path, '{"edge": "' + "x" * 5000 + '"}')
    print("no error")
except OSError as e:
    print("raised", type(e).__name__, e)
"""


def test_append_line_fails_loudly_on_a_short_write(tmp_path):
    path = tmp_path / "lineage.jsonl"
    path.write_text('{"child": "d-1"}\n' * 100)  # 1700 bytes
    # room for 3972 of the record's 5012 bytes: the kernel writes those, then refuses
    r = child(APPEND, str(path), fsize=path.stat().st_size + 3972)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("raised WriteError"), r.stdout + r.stderr
    assert "lineage.jsonl" in r.stdout and "disk full" in r.stdout
    assert "\n" not in r.stdout.strip()


def test_a_torn_tail_never_swallows_the_next_record(tmp_path, caplog):
    from lineage.utils import append_line
    from lineage.zoo import read_jsonl

    path = tmp_path / "record.jsonl"
    path.write_bytes(b'{"id": "m-1"}\n{"id": "m-2", "sec')  # a write cut short
    append_line(path, json.dumps({"id": "m-3"}))
    with caplog.at_level(logging.WARNING):
        assert read_jsonl(path) == [{"id": "m-1"}, {"id": "m-3"}]
    assert "record.jsonl:2" in caplog.text


# ------------------------------------------- 10: parseable but wrong lines in the records


def test_wrong_lines_in_the_records_are_skipped_with_a_warning(tmp_path, caplog):
    zoo = Zoo(tmp_path)
    junk = b'{}\n123\n\xff\xfe\n"text"\n' + b"[" * 5000 + b"]" * 5000 + b"\n"
    (tmp_path / "lineage.jsonl").write_bytes(junk)
    (tmp_path / "record.jsonl").write_bytes(junk)
    meta = {"id": "d-1", "parent_id": "m-0", "modification": "noise", "ratio": 0.1}
    with caplog.at_level(logging.WARNING, logger="lineage.zoo"):
        zoo.save_derived(tiny(), meta)
        assert zoo.trained() == []
    assert list(zoo.edges()) == ["d-1"]
    for n in (1, 2, 3, 4, 5):
        assert f"lineage.jsonl:{n}: skipped" in caplog.text
        assert f"record.jsonl:{n}: skipped" in caplog.text


# ------------------------------------------------- 11: a damaged result means "not done"


DAMAGED = {
    "binary": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",
    "deep": b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
}


@pytest.mark.parametrize("kind", DAMAGED)
def test_damaged_metrics_json_is_rerun_and_reported(tmp_path, kind, caplog):
    from test_report import synthetic_metrics, write_job

    from lineage.pipeline import previous_result
    from lineage.report.collect import collect
    from lineage.report.html import write_report

    job = tmp_path / "sweep" / "bad"
    write_job(job, "noise", 0.5, 0, None)
    (job / "metrics.json").write_bytes(DAMAGED[kind])
    with caplog.at_level(logging.WARNING, logger="lineage"):
        assert previous_result(job / "metrics.json", "h") is None
    assert "damaged" in caplog.text and "rerunning" in caplog.text
    write_job(tmp_path / "sweep" / "good", "noise", 0.5, 1, synthetic_metrics("noise", 0.5, 1))
    c = collect([tmp_path / "sweep"])
    assert len(c.table) == 1 and [i.path.parent.name for i in c.issues_of("malformed")] == ["bad"]
    md = write_report(c, tmp_path / "out", decision_planes=False).markdown.read_text()
    assert "malformed" in md and "bad/metrics.json" in md


# The sweep's exit status: tests/test_pipeline.py::test_bad_job_in_a_sweep_records_why_and_
# the_sweep_goes_on (one job refused, error.json written, the other job done, exit 1).


# -------------------------------------------------------- 12: a full disk, found first


def test_a_full_disk_is_one_line_before_any_training(tmp_path):
    # 200 KB per file: Hydra's files, configs and records fit; a 340 KB model does not.
    zoo = tmp_path / "zoo"
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "run.py"),
            "experiment=smoke",
            "logger=none",
            "model.hidden=[256,256]",
            f"paths.zoo={zoo}",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=HANG_S,
        env=ENV,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000)),
    )
    line = one_error_line(r.stderr)
    assert r.returncode == 2 and "cannot write to the zoo" in line and "disk full" in line
    assert not (zoo / "record.jsonl").exists()  # nothing was trained
    assert not list(zoo.rglob("*.tmp"))


ATOMIC = """
import sys
from lineage.utils import atomic_write
from lineage.errors import LineageError
try:
    atomic_write(sys.argv[1], b"x" * 100_000)
    print("written")
except LineageError as e:
    print("error:", e)
"""


def test_a_write_that_does_not_fit_is_one_clear_error(tmp_path):
    r = child(ATOMIC, str(tmp_path / "metrics.json"), fsize=10_000)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert r.stdout.startswith("error: cannot write") and "metrics.json" in r.stdout
    assert list(tmp_path.iterdir()) == []  # no partial file, no temp file


# ------------------------------------------------------------ 13: ordinary inputs that crash


@pytest.mark.parametrize(
    "override,fragment",
    [
        ("data.classes=[3]", "data.classes=[3]: must list at least two distinct classes"),
        (f"seed={10**30}", f"seed={10**30} is outside its range [0, 2147483647]"),
    ],
    ids=["one_class", "huge_seed"],
)
def test_ordinary_bad_values_are_one_line(tmp_path, override, fragment):
    r = lineage_here(
        "run",
        "experiment=smoke",
        "logger=none",
        f"paths.zoo={tmp_path / 'zoo'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        override,
    )
    assert r.returncode == 2 and fragment in one_error_line(r.stderr)
    assert not (tmp_path / "zoo" / "record.jsonl").exists()


def test_long_overrides_get_a_short_run_dir(tmp_path):
    root = "/tmp/" + "x" * 300  # digits ignores data.root, but the run dir is named from it
    r = run_py(
        "experiment=smoke",
        "logger=none",
        f"paths.zoo={tmp_path / 'zoo'}",
        f"data.root={root}",
        "ratio=1.5",
        cwd=tmp_path,  # run folders are made where the command runs
    )
    # the job started (its range check ran) in a folder with a hashed, short name
    assert "ratio=1.5 is outside its range" in one_error_line(r.stderr), r.stderr[-2000:]
    (run_dir,) = (tmp_path / "outputs" / "runs" / "smoke").iterdir()
    assert len(run_dir.name.encode()) <= 128 and "~" in run_dir.name
    assert run_dir.name.startswith("data.root=%2Ftmp%2Fxxx")  # one folder: `/` escaped


def test_compare_with_a_300_character_file_name(tmp_path):
    name = str(tmp_path / ("m" * 300 + ".safetensors"))
    r = cli("compare", name, name)
    line = one_error_line(r.stderr)
    assert r.returncode == 2 and "File name too long" in line and len(line) < 300


# --------------------------------------------------------- 14: a diverged model is never kept


def test_modification_lr_has_a_range():
    from lineage.modifications import validate

    for name in ("finetune", "pruning", "distill", "extraction", "transfer", "adversarial"):
        with pytest.raises(LineageError, match=rf"{name}\.lr=1e\+30 is outside its range"):
            validate({"name": name, "lr": 1e30}, 0.5)
        validate({"name": name, "lr": 10.0}, 0.5)


def test_non_finite_models_are_never_saved_or_recorded(tmp_path):
    zoo = Zoo(tmp_path)
    broken = tiny()
    with torch.no_grad():
        broken.head.weight[0, 0] = float("nan")
    meta = {"id": "d-nan", "parent_id": "m-0", "modification": "finetune", "ratio": 0.5}
    with pytest.raises(LineageError, match="NaN or Inf"):
        zoo.save_derived(broken, meta)
    with pytest.raises(LineageError, match="NaN or Inf"):
        zoo.get_or_train({"seed": 0}, lambda: (broken, {}), "parent")
    assert not list((tmp_path / "models").iterdir())
    assert not (tmp_path / "lineage.jsonl").exists() and not (tmp_path / "record.jsonl").exists()


# -------------------------------------------------- 15, 16, 17: reports and terminals


EVIL_DIR = "<img src=x onerror=alert(1)>\x1b[2J"
EVIL_OVERRIDE = "note=x\n```\n# INJECTED HEADING\n<script>alert(2)</script>"


def _fenced_lines(md: str) -> set[int]:
    """Indices of the lines inside fenced code blocks, by CommonMark's rule: a block
    closes at a line of only backticks at least as long as its opening fence."""
    inside, fence = set(), None
    for i, line in enumerate(md.splitlines()):
        stripped = line.strip()
        if fence is None:
            if stripped.startswith("```"):
                fence = len(stripped) - len(stripped.lstrip("`"))
        elif set(stripped) == {"`"} and len(stripped) >= fence:
            fence = None
        else:
            inside.add(i)
    return inside


def test_report_escapes_strangers_text(tmp_path):
    import yaml
    from test_report import synthetic_metrics, write_job

    from lineage.report.collect import collect
    from lineage.report.html import write_report

    sweep = tmp_path / "sweep"
    good = sweep / EVIL_DIR
    write_job(good, "finetune", 0.5, 0, synthetic_metrics("finetune", 0.5, 0))
    (good / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([EVIL_OVERRIDE]))
    failed = sweep / "failed"
    write_job(failed, "pruning", 0.5, 0, None)
    (failed / "error.json").write_text(
        json.dumps({"error": "boom | <b>bold</b>\x1b[31m ![x](javascript:alert(3))"})
    )
    files = write_report(collect([sweep]), tmp_path / "out", decision_planes=False)
    md, page = files.markdown.read_text(), files.html.read_text()
    lines = md.splitlines()
    fenced = _fenced_lines(md)
    prose = "\n".join(ln for i, ln in enumerate(lines) if i not in fenced)  # rendered as Markdown
    for text in (prose, page):
        assert "<img src=x" not in text and "<script" not in text and "<b>" not in text
    assert "\x1b" not in md and "\x1b" not in page
    injected = [i for i, ln in enumerate(lines) if "INJECTED HEADING" in ln]
    assert injected and set(injected) <= fenced, "text escaped its code block"
    assert "![x]" not in md and "&lt;img src=x onerror=alert(1)&gt;" in md
    rows = [ln for ln in lines if "boom" in ln]
    assert rows and all(ln.count(" | ") == 2 for ln in rows)  # the `|` did not add a cell


def test_figures_draw_mathtext_as_plain_text(tmp_path):
    from matplotlib.image import imread
    from test_report import synthetic_metrics, write_job

    from lineage.report.collect import collect
    from lineage.report.html import write_report

    mod = "fine$\\foo{$tune"
    for ratio in (0.2, 0.8):
        for seed in (0, 1):
            write_job(
                tmp_path / "sweep" / f"r{ratio}s{seed}",
                mod,
                ratio,
                seed,
                synthetic_metrics(mod, ratio, seed),
            )
    files = write_report(collect([tmp_path / "sweep"]), tmp_path / "out", decision_planes=False)
    for name in ("closeness_vs_ratio", "barrier_vs_ratio", "determination_accuracy"):
        assert imread(tmp_path / "out" / f"{name}.png").shape[0] > 100
    assert not {"closeness", "barrier", "determination"} & set(files.summary_data["skipped"])


def test_control_characters_never_reach_the_terminal(tmp_path):
    evil = tmp_path / "a\x1b[2J\x1b[31m\nerror: forged verdict: lineage\u202e.safetensors"
    evil.write_bytes(b"\x00" * 64)
    r = cli("compare", str(evil), str(evil))
    line = one_error_line(r.stderr)
    assert r.returncode == 2 and "\x1b" not in r.stderr and "\u202e" not in r.stderr
    assert "\\x1b[2J" in line and "\\n" in line and "forged" in line  # shown, not obeyed
    err = LineageError("bad name: x\x1b]0;title\x07\ny")
    assert str(err) == "bad name: x\\x1b]0;title\\x07\\ny"


# --------------------------------------------- 18: interrupted work does not look finished


def _wait_for_training(zoo: Path, p: subprocess.Popen, timeout: float = HANG_S) -> None:
    """Until a model's lock exists (the zoo takes it right before training the model)."""
    deadline = time.monotonic() + timeout
    while not list((zoo / "locks").glob("m-*.lock")):
        assert p.poll() is None, p.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "training never started"
        time.sleep(0.05)


def _terminate_while_training(cmd: list[str], zoo: Path, seed: int) -> subprocess.CompletedProcess:
    p = subprocess.Popen(
        cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        _wait_for_training(zoo, p)
        time.sleep(random.Random(seed).uniform(0.2, 1.5))  # somewhere inside the training
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=HANG_S)
    finally:
        p.kill()
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


@pytest.mark.slow
def test_sigterm_during_reference_training_fails_compare(tmp_path):
    parent = models.save(
        tiny(),
        tmp_path / "p.safetensors",
        # a recorded recipe, so compare may train references like the parent
        {"id": "p", "data": {"name": "digits"}, "spec": {"data": {"name": "digits"}}},
    )
    zoo = tmp_path / "zoo"
    cmd = [
        sys.executable,
        "-m",
        "lineage",
        "compare",
        str(parent),
        str(parent),
        "--references",
        "2",
        "--zoo",
        str(zoo),
        "data.epochs=500",
    ]
    r = _terminate_while_training(cmd, zoo, seed=int(time.time()))
    assert r.returncode == 128 + signal.SIGTERM, (r.returncode, r.stderr[-2000:])
    line = one_error_line(r.stderr)
    assert "interrupted by SIGTERM while training the independent model" in line
    assert r.stdout == ""  # no verdict
    assert not list((zoo / "models").iterdir())  # nothing half-written, nothing kept


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["run", "sweep"])
def test_sigterm_fails_a_run_or_a_sweep(tmp_path, mode):
    from test_faults import assert_outputs_valid

    zoo = tmp_path / "zoo"
    where = (
        [f"hydra.run.dir={tmp_path / 'run'}"]
        if mode == "run"
        else ["ratio=0.3,0.6", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    )
    cmd = [
        sys.executable,
        str(ROOT / "run.py"),
        *(["-m"] if mode == "sweep" else []),
        "experiment=smoke",
        "logger=none",
        f"paths.zoo={zoo}",
        "data.epochs=500",
        *where,
    ]
    r = _terminate_while_training(cmd, zoo, seed=int(time.time()))
    assert r.returncode == 128 + signal.SIGTERM, (r.returncode, r.stderr[-2000:])
    assert "error: lineage run interrupted by SIGTERM while running job" in r.stderr
    assert "training the parent model" in r.stderr
    assert not list(tmp_path.rglob("metrics.json"))
    assert not list((zoo / "models").iterdir())
    assert_outputs_valid(tmp_path)
