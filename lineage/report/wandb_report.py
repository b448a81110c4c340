"""The same report as a W&B Report, with panels over the sweep's runs.

`wandb-workspaces` is an optional extra (`pip install -e '.[wandb-report]'`), imported only
when a report is published. The report is first built as plain data (`report_blocks`), which
needs neither that package nor the network, so its structure is unit-tested; `to_wandb`
maps it onto `wandb_workspaces.reports.v2` objects.

`check_ready` runs before anything slow: offline mode or missing credentials fail at once,
with the way to log in, instead of hanging on a network call.
"""

from __future__ import annotations

import netrc
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import LineageError

LOGIN_HINT = (
    "log in with `wandb login` (or set WANDB_API_KEY to the key from https://wandb.ai/authorize)"
)
OFFLINE_MODES = ("offline", "disabled", "dryrun")


def api_key(env: Mapping[str, str] | None = None) -> str | None:
    """The W&B API key wandb itself would use: WANDB_API_KEY, else the netrc entry for the
    W&B host (NETRC, else ~/.netrc). Reads files only; never touches the network."""
    env = os.environ if env is None else env
    if env.get("WANDB_API_KEY"):
        return env["WANDB_API_KEY"]
    host = urlsplit(env.get("WANDB_BASE_URL") or "https://api.wandb.ai").netloc
    home = Path(env.get("HOME") or Path.home())
    path = Path(env["NETRC"]).expanduser() if env.get("NETRC") else home / ".netrc"
    try:
        creds = netrc.netrc(str(path)).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return None
    return creds[2] if creds and creds[2] else None


def check_ready(env: Mapping[str, str] | None = None) -> None:
    """Raise LineageError, saying how to fix it, unless a report can be published now."""
    env = os.environ if env is None else env
    mode = (env.get("WANDB_MODE") or "").strip().lower()
    if mode in OFFLINE_MODES:
        raise LineageError(
            f"--wandb publishes online, but WANDB_MODE={mode}: set "
            f"WANDB_MODE=online (or unset it) and {LOGIN_HINT}"
        )
    if not api_key(env):
        raise LineageError(
            f"--wandb: not logged in to W&B (no WANDB_API_KEY and no "
            f"api.wandb.ai entry in ~/.netrc); {LOGIN_HINT}"
        )
    try:
        import wandb_workspaces.reports.v2  # noqa: F401
    except ImportError:
        raise LineageError(
            "--wandb needs the optional package wandb-workspaces: "
            "pip install wandb-workspaces (or pip install -e "
            "'.[wandb-report]')"
        ) from None


# --- the report as plain data --------------------------------------------------------------
# A block is {"type": ..., ...}; a metric reference is {"config": key} or {"summary": key}.


def _cfg(key: str) -> dict[str, str]:
    return {"config": key}


def _sum(key: str) -> dict[str, str]:
    return {"summary": key}


def sweep_groups(job_dirs: list[str]) -> list[str]:
    """The W&B groups of the jobs: run.py groups a sweep's runs by its directory's name."""
    groups = []
    for d in map(Path, job_dirs):
        if (d.parent / "multirun.yaml").is_file() and d.parent.name not in groups:
            groups.append(d.parent.name)
    return groups


def runset(project: str, entity: str | None, groups: list[str]) -> dict[str, Any]:
    filters = " or ".join(f"Metric('group') == '{g}'" for g in groups)
    return {
        "project": project,
        "entity": entity or "",
        "name": ", ".join(groups) or "runs",
        "filters": filters,
        "groupby": ["config.modification.name"],
    }


# Section key -> panels over the runs (x = the run's config, y = its summary = metrics.json).
PANELS: dict[str, list[dict[str, Any]]] = {
    "closeness": [
        {
            "type": "scatter",
            "title": "closeness vs ratio",
            "x": _cfg("ratio"),
            "y": _sum("derived.evidence.closeness.score"),
        },
        {
            "type": "scatter",
            "title": "closeness CI low vs ratio",
            "x": _cfg("ratio"),
            "y": _sum("derived.evidence.closeness.ci_low"),
        },
        {
            "type": "scatter",
            "title": "closeness CI high vs ratio",
            "x": _cfg("ratio"),
            "y": _sum("derived.evidence.closeness.ci_high"),
        },
    ],
    "barrier": [
        {
            "type": "scatter",
            "title": "barrier vs ratio",
            "x": _cfg("ratio"),
            "y": _sum("derived.evidence.basin.barrier"),
        },
        {
            "type": "scatter",
            "title": "threshold vs ratio",
            "x": _cfg("ratio"),
            "y": _sum("derived.evidence.basin.threshold"),
        },
    ],
    "determination": [
        {
            "type": "bar",
            "title": "false positives on independent references",
            "metrics": [_sum("independent.false_positives")],
        },
    ],
    "roc": [
        {
            "type": "scatter",
            "title": "closeness vs barrier",
            "x": _sum("derived.evidence.basin.barrier"),
            "y": _sum("derived.evidence.closeness.score"),
        },
    ],
    "accuracy": [
        {
            "type": "scatter",
            "title": "derived accuracy vs ratio",
            "x": _cfg("ratio"),
            "y": _sum("derived.accuracy"),
        },
    ],
    "timing": [
        {
            "type": "bar",
            "title": "seconds per stage",
            "metrics": [
                _sum(f"time.{s}_s")
                for s in ("parent", "derive", "basin", "closeness", "inherited", "total")
            ],
        },
    ],
}


def report_blocks(
    sections: list[Any],
    summary: dict[str, Any],
    project: str,
    entity: str | None,
    groups: list[str],
) -> list[dict[str, Any]]:
    """The W&B report as plain data: for each local section, its text, its tables as
    Markdown, and a panel grid over the sweep's runs where panels exist."""
    from ..text import md_text
    from .html import md_table
    from .links import Links

    rs = runset(project, entity, groups)
    blocks: list[dict[str, Any]] = [
        {"type": "toc"},
        {
            "type": "p",
            "text": f"{summary['jobs']} job(s); sweep group(s): "
            f"{', '.join(groups) or 'none (single runs)'}. Runs logged "
            "offline appear only after `wandb sync <job>/wandb/offline-run-*`.",
        },
    ]
    for s in sections:
        blocks.append({"type": "h2", "text": s.title, "section": s.key})
        if s.text:
            blocks.append({"type": "p", "text": s.text})
        if s.key in PANELS:
            blocks.append(
                {"type": "panel_grid", "section": s.key, "runset": rs, "panels": PANELS[s.key]}
            )
        for e in s.explanations:
            lines = "\n".join(f"- {md_text(line)}" for line in e.lines())
            blocks.append({"type": "markdown", "text": f"**{md_text(e.job)}**\n\n{lines}"})
        for caption, df in s.tables:
            # links to the jobs' files are relative to the local report: not in W&B
            local = [c for c in df.columns if df[c].map(lambda v: isinstance(v, Links)).any()]
            table = md_table(df.drop(columns=local))
            blocks.append({"type": "markdown", "text": f"**{caption}**\n\n{table}"})
        if s.figures and s.key not in PANELS:
            names = ", ".join(p.name for p, _ in s.figures)
            blocks.append({"type": "p", "text": f"Pictures in the local report: {names}."})
        for caption, text in s.code:
            blocks.append({"type": "p", "text": caption})
            blocks.append(
                {
                    "type": "code",
                    "text": text,
                    "language": "yaml" if "config" in caption.lower() else "bash",
                }
            )
        for note in s.notes:
            blocks.append({"type": "p", "text": f"Note: {note}"})
    return blocks


def to_wandb(
    blocks: list[dict[str, Any]],
    project: str,
    entity: str | None,
    title: str,
    description: str = "",
) -> Any:
    """Map plain blocks onto wandb_workspaces.reports.v2 (imported here, lazily)."""
    import wandb_workspaces.reports.v2 as wr

    def metric(ref: dict[str, str]) -> Any:
        return wr.Config(ref["config"]) if "config" in ref else wr.SummaryMetric(ref["summary"])

    def panel(p: dict[str, Any]) -> Any:
        if p["type"] == "scatter":
            return wr.ScatterPlot(title=p["title"], x=metric(p["x"]), y=metric(p["y"]))
        return wr.BarPlot(title=p["title"], metrics=[metric(m) for m in p["metrics"]])

    def block(b: dict[str, Any]) -> Any:
        kind = b["type"]
        if kind == "toc":
            return wr.TableOfContents()
        if kind == "h2":
            return wr.H2(text=b["text"])
        if kind == "p":
            return wr.P(text=b["text"])
        if kind == "markdown":
            return wr.MarkdownBlock(text=b["text"])
        if kind == "code":
            return wr.CodeBlock(code=b["text"], language=b["language"])
        if kind == "panel_grid":
            r = b["runset"]
            rs = wr.Runset(
                entity=r["entity"],
                project=r["project"],
                name=r["name"],
                filters=r["filters"],
                groupby=r["groupby"],
            )
            return wr.PanelGrid(runsets=[rs], panels=[panel(p) for p in b["panels"]])
        raise ValueError(f"unknown block type {kind!r}")

    kw = {"entity": entity} if entity else {}
    return wr.Report(
        project=project,
        title=title,
        description=description,
        blocks=[block(b) for b in blocks],
        **kw,
    )


def publish(report: Any) -> str:
    """Save the report on W&B; returns its URL."""
    # A stalled connection must end in an error, not a hang.
    os.environ.setdefault("WANDB_HTTP_TIMEOUT", "30")
    try:
        report.save()
    except Exception as e:  # network and API errors come in many classes
        raise LineageError(
            f"saving the W&B report failed ({type(e).__name__}: {e}); "
            f"check the project/entity and {LOGIN_HINT}"
        ) from None
    return str(getattr(report, "url", ""))
