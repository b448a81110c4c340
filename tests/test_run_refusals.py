"""`run.py` / `lineage run` refuse a bad command line in one `error:` line, exit 2, before
Hydra writes anything (issue 25 items 11, 12, 13; issue 29 item 4): an unknown group
option or a mistyped value (Hydra printed a block and exited 1), an unknown top-level key
added with `+` (silently ignored), a system folder or an unwritable run folder (a
traceback from Hydra's logging set-up; `hydra.run.dir=/` wrote /metrics.json), and a
control or format character in the command line's text (a run folder that displays
reversed)."""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest
from conftest import HANG_S, ROOT, lineage_here

BIDI = "\u202e"


def one_error_line(r: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    assert r.returncode == 2, r.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr[-2000:]
    return lines[0]


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("data=mnsit", "unknown data 'mnsit' (choose from: breast_cancer, cifar10, digits,"),
        ("modification=prunning", "unknown modification 'prunning' (choose from: "),
        ("ratio=abc", "ratio=abc: Value 'abc' of type 'str' could not be converted to Float"),
        ("+no.such.key=1", "unknown key 'no'"),
        ("hydra.run.dir=/", "the output directory (hydra.run.dir) / is a system folder"),
        ("hydra.run.dir=/proc/self", "/proc/self is a system folder"),
        (f"name='ab{BIDI}cd'", "the override name='ab\\u202ecd' holds a control or format"),
        ("name='x\x1b[31m'", "holds a control or format character"),
    ],
)
def test_a_bad_command_line_is_one_line_and_exit_2(tmp_path, override, expected):
    # in this process (what it says); the two tests below run real processes
    r = lineage_here("run", override, "logger=none", "n_independent=0", cwd=tmp_path)
    assert expected in one_error_line(r)
    assert not (tmp_path / "outputs" / "runs").exists()  # refused before any folder
    assert not (tmp_path / "metrics.json").exists()


def test_lineage_run_says_the_same(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "lineage", "run", "data=mnsit"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=HANG_S,
    )
    assert "unknown data 'mnsit'" in one_error_line(r)


def test_a_run_folder_without_room_is_refused_before_hydra_writes(tmp_path):
    """A full disk, as the kernel's file-size limit makes one: Hydra's own files would
    not fit, and its logging set-up raised a traceback."""
    run = tmp_path / "run"
    r = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "logger=none", f"hydra.run.dir={run}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=HANG_S,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096)),
    )
    line = one_error_line(r)
    assert "cannot write to the output directory (hydra.run.dir)" in line
    assert not (run / ".hydra").exists()


def test_safe_dirname_escapes_control_characters():
    from lineage.utils import safe_dirname

    assert safe_dirname(f"ab{BIDI}cd") == "ab\\u202ecd"
    assert safe_dirname("plain=1,b=2") == "plain=1,b=2"
