"""`lineage --help`, `--version` and argument errors stay on the light path: no torch, no
Lightning, no Hydra (issue 25 item 17, issue 29 item 4). The figures are the benchmark's
(benchmarks/bench_cli_light.py); here only what was imported, and the answers."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import HANG_S, ROOT

HEAVY = ("torch", "pytorch_lightning", "lightning", "hydra")

PROBE = (
    f"HEAVY = {HEAVY!r}\n"
    + r"""
import json, sys
from lineage.cli import main
try:
    rc = main(sys.argv[1:])
except SystemExit as e:
    rc = e.code
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(HEAVY))
print(json.dumps({"rc": rc, "heavy": heavy}), file=sys.stderr)
"""
)


def probe(*args: str) -> tuple[dict, str, str]:
    r = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=HANG_S,
    )
    *lines, last = r.stderr.strip().splitlines()
    return json.loads(last), r.stdout, "\n".join(lines)


def test_help_imports_no_torch_nor_lightning():
    out, stdout, _ = probe("--help")
    assert out == {"rc": 0, "heavy": []}
    assert "compare" in stdout and "serve" in stdout and "report" in stdout


def test_version_is_light_and_names_the_package():
    out, stdout, _ = probe("--version")
    assert out == {"rc": 0, "heavy": []}
    assert stdout.startswith("lineage ")


def test_an_unknown_option_is_light_and_one_usage_error():
    out, _, err = probe("compare", "a.safetensors", "b.safetensors", "--no-such-option")
    assert out == {"rc": 2, "heavy": []}
    assert "unrecognized arguments: --no-such-option" in err


def test_subcommand_help_is_light():
    for cmd in ("compare", "serve", "report"):
        out, stdout, _ = probe(cmd, "--help")
        assert out == {"rc": 0, "heavy": []}, cmd
        assert f"usage: lineage {cmd}" in stdout


def test_a_missing_model_file_is_refused_before_the_heavy_imports(tmp_path):
    out, _, err = probe("compare", str(tmp_path / "nope.safetensors"), str(tmp_path / "b.pt"))
    assert out == {"rc": 2, "heavy": []}
    assert err.startswith("error: model file not found: ") and "nope.safetensors" in err
    assert len(err.splitlines()) == 1


def test_the_benchmark_smallest_case_runs():
    from benchmarks.bench_cli_light import table

    text = table(1, [("--version", ["--version"])])
    assert "| lineage --version | 0 |" in text


def limited(args: list[str], limit: int, script: str | None = None, cwd=ROOT):
    import resource

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.RLIM_INFINITY))

    cmd = [sys.executable, script] if script else [sys.executable, "-m", "lineage"]
    return subprocess.run(
        [*cmd, *args], cwd=cwd, capture_output=True, text=True, timeout=HANG_S, preexec_fn=cap
    )


def test_under_1_gib_each_heavy_command_is_one_line_not_a_traceback(tmp_path):
    """Issue 25, item 16: torch, Lightning and their thread pools reserve about 1.2 GB of
    address space, so under `ulimit -v 1048576` an import or libgomp's thread creation
    failed midway with a traceback. The floor (utils.MIN_ADDRESS_SPACE) is checked
    first."""
    for name in ("p.safetensors", "s.safetensors"):
        (tmp_path / name).write_bytes(b"x")
    cases = [
        ["compare", str(tmp_path / "p.safetensors"), str(tmp_path / "s.safetensors")],
        ["serve", str(tmp_path / "p.safetensors")],
        ["run", "logger=none"],
    ]
    for args in [*cases, None]:
        if args is None:
            r = limited(["logger=none"], 2**30, str(ROOT / "run.py"), cwd=tmp_path)
        else:
            r = limited(args, 2**30, cwd=tmp_path)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-1500:]
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "needs at least 1.5 GiB of address space" in lines[0]
        assert "the limit here is 1.00 GiB" in lines[0]
    assert not (tmp_path / "outputs").exists()


@pytest.mark.slow
def test_a_digits_compare_runs_at_the_documented_floor(tmp_path):
    from lineage import models
    from lineage.utils import MIN_ADDRESS_SPACE

    files = []
    for i, name in enumerate(["p", "s", "r0", "r1"]):
        torch.manual_seed(i)
        m = models.build("mlp", 10, 1, [8, 8], hidden=[16])
        path = tmp_path / f"{name}.safetensors"
        files.append(str(models.save(m, path, {"id": name, "data": {"name": "digits"}})))
    args = ["compare", files[0], files[1], "--reference", files[2], "--reference", files[3]]
    r = limited(
        [*args, "closeness.max_points=120", "closeness.min_points=60", "--json"],
        MIN_ADDRESS_SPACE,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "evidence.basin.barrier" in json.loads(r.stdout)
