"""Links from the report to each job's own files: metrics.json, its config, its W&B run
folder and CSV logs where they exist. Relative to the report's folder, so the report and
the sweep can be moved or served together; percent-quoted, so a job name with `#`, `?` or
spaces still points at its file."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote


class Links(tuple[tuple[str, str], ...]):
    """A table cell of (label, href) pairs; as text (Markdown, W&B), the labels and paths."""

    def __str__(self) -> str:
        return ", ".join(f"{label}: {href}" for label, href in self)


def href(target: Path, out_dir: Path) -> str:
    rel = os.path.relpath(target, out_dir)
    return quote(Path(rel).as_posix())


def _wandb_runs(job_dir: Path) -> list[Path]:
    """The job's W&B run folders (wandb.init(dir=job dir) writes wandb/run-* or
    wandb/offline-run-*), newest last; the `latest-run` link is the same folder again."""
    root = job_dir / "wandb"
    if not root.is_dir():
        return []
    runs = [p for p in root.iterdir() if p.is_dir() and not p.is_symlink() and "run-" in p.name]
    return sorted(runs, key=lambda p: p.name)


def job_files(job_dir: Path) -> list[tuple[str, Path]]:
    """(label, file) for each of the job's files a reader may want, that exists."""
    out: list[tuple[str, Path]] = []
    for label, names in (
        ("metrics.json", ["metrics.json"]),
        ("config", ["config.json", ".hydra/config.yaml"]),
        ("error", ["error.json"]),
        ("summary", ["summary.txt"]),
        ("log", ["lineage.log"]),
        ("csv log", ["summary.csv"]),
    ):
        found = next((job_dir / n for n in names if (job_dir / n).is_file()), None)
        if found is not None:
            out.append((label, found))
    runs = _wandb_runs(job_dir)
    for i, run in enumerate(runs):
        out.append(("W&B run" if len(runs) == 1 else f"W&B run {i + 1}", run))
    return out


def job_links(job_dir: Path, out_dir: Path) -> Links:
    return Links((label, href(p, out_dir)) for label, p in job_files(job_dir))
