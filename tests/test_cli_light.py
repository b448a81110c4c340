"""`lineage --help`, `--version` and argument errors stay on the light path: no torch, no
Lightning, no Hydra (issue 25 item 17, issue 29 item 4). The figures are the benchmark's
(benchmarks/bench_cli_light.py); here only what was imported, and the answers."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT

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
        [sys.executable, "-c", PROBE, *args], cwd=ROOT, capture_output=True, text=True, timeout=120
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
