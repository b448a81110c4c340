"""`lineage report PATH... [--out DIR] [--wandb [--project P] [--entity E]]`: a report from
sweep or run directories.

Writes DIR/report.html (self-contained), DIR/report.md with the PNG figures beside it,
DIR/report.json, DIR/metrics.csv (and metrics.parquet when pyarrow is installed).
DIR defaults to <first PATH>/report. Exit status: 0 when the report was written (missing or
failed jobs are listed in it), 2 on bad input or a W&B failure.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..errors import LineageError
from ..text import printable


def add_parser(sub: argparse._SubParsersAction) -> None:
    ap = sub.add_parser(
        "report",
        help="report.html / report.md / figures from sweep or run directories",
        description=__doc__.split("\n\n")[0],
    )
    add_arguments(ap)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("paths", nargs="+", metavar="PATH", help="sweep or run directories")
    ap.add_argument("--out", type=Path, help="output directory (default: <first PATH>/report)")
    ap.add_argument("--title", default="Lineage sweep report")
    ap.add_argument(
        "--no-decision-planes",
        action="store_true",
        help="skip the decision-plane pictures (they load models and data)",
    )
    ap.add_argument("--wandb", action="store_true", help="also publish a W&B Report (online)")
    ap.add_argument("--project", help="W&B project (default: the jobs' logger.project)")
    ap.add_argument("--entity", help="W&B entity (default: your default entity)")


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        if args.wandb:
            from .wandb_report import check_ready

            check_ready()  # before any slow work: offline/not logged in fails in milliseconds
        return build(args)
    except LineageError as e:
        print(f"error: {printable(e)}", file=sys.stderr)
        return 2


def build(args: argparse.Namespace) -> int:
    from .collect import collect, job_config
    from .html import write_report

    c = collect(args.paths)
    out = args.out or Path(args.paths[0]) / "report"
    files = write_report(c, out, title=args.title, decision_planes=not args.no_decision_planes)
    print(f"{len(c.table)} job(s) -> {printable(files.html)}")
    print(f"  markdown: {printable(files.markdown)}")
    print(f"  tables:   {', '.join(printable(p) for p in files.tables)}")
    for kind in ("missing", "error", "malformed", "partial"):
        if issues := c.issues_of(kind):
            print(
                f"  {len(issues)} {kind}: "
                + ", ".join(printable(i.path) for i in issues[:5])
                + (" ..." if len(issues) > 5 else "")
            )
    for key, notes in files.summary_data["skipped"].items():
        for note in notes:
            print(f"  [{key}] {printable(note)}")
    if args.wandb:
        from . import wandb_report as wb

        project = args.project
        if not project and len(c.table):
            cfg = job_config(Path(c.table["job_dir"].iloc[0])) or {}
            project = (cfg.get("logger") or {}).get("project")
        project = project or "lineage"
        groups = wb.sweep_groups(list(c.table["job_dir"]))
        blocks = wb.report_blocks(files.sections, files.summary_data, project, args.entity, groups)
        url = wb.publish(wb.to_wandb(blocks, project, args.entity, args.title))
        print(f"W&B report: {url}")
    return 0
