"""Experiment tracking behind one small interface: W&B, CSV, or nothing.

wandb is imported only when logger=wandb is chosen, so logger=none and logger=csv work
even where wandb is missing or broken.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import LineageError
from .utils import atomic_write

if TYPE_CHECKING:
    from .engine import Verdict


class Tracker:
    """No-op tracker (logger=none); the base of the others."""

    def lightning_logger(self, stage: str) -> Any:
        return None

    def log_summary(self, metrics: dict[str, Any]) -> None:
        pass

    def log_artifact(self, path: Path, name: str) -> None:
        pass

    def log_curves(self, curves: dict[str, list[dict[str, float]]]) -> None:
        """The interpolation paths (pair name -> [{alpha, loss, error}]) of the job."""

    def log_verdicts(self, pairs: list[tuple[str, Verdict]]) -> None:
        """The verdict of each pair (the derived model, each reference left out), with the
        evidence behind it: one row each (`verdict_table`)."""

    def finish(self) -> None:
        pass


CURVE_COLUMNS = ["pair", "alpha", "loss", "error"]


def curve_rows(curves: dict[str, list[dict[str, float]]]) -> list[list[Any]]:
    return [[name, c["alpha"], c["loss"], c["error"]] for name, cs in curves.items() for c in cs]


def verdict_table(pairs: list[tuple[str, Verdict]]) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows: the pair, its answer and combined p-value, and per kind of evidence
    its p-value and headline value (None where it did not apply)."""
    from .evaluate import evidence

    kinds = evidence.kinds()
    columns = ["pair", "answer", "p_value", "decided_by"]
    for k in kinds:
        columns += [f"{k.name}.p", f"{k.name}.{k.headline}"]
    rows = []
    for name, v in pairs:
        d = v.decision
        row: list[Any] = [name, d.answer, d.p_value, d.decided_by]
        for k in kinds:
            value = getattr(v.evidence.get(k.name), k.headline, None)
            row += [d.p.get(k.name), value if isinstance(value, int | float | str) else None]
        rows.append(row)
    return columns, rows


class CSVTracker(Tracker):
    def __init__(self, out_dir: Path):
        self.out_dir = out_dir

    def lightning_logger(self, stage: str) -> Any:
        from pytorch_lightning.loggers import CSVLogger

        return CSVLogger(str(self.out_dir), name="csv", version=stage)

    def log_summary(self, metrics: dict[str, Any]) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=sorted(metrics))
        w.writeheader()
        w.writerow(metrics)
        atomic_write(self.out_dir / "summary.csv", buf.getvalue())

    def log_curves(self, curves: dict[str, list[dict[str, float]]]) -> None:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerows([CURVE_COLUMNS, *curve_rows(curves)])
        atomic_write(self.out_dir / "curves.csv", buf.getvalue())

    def log_verdicts(self, pairs: list[tuple[str, Verdict]]) -> None:
        columns, rows = verdict_table(pairs)
        buf = io.StringIO()
        csv.writer(buf).writerows([columns, *rows])
        atomic_write(self.out_dir / "verdicts.csv", buf.getvalue())


class WandbTracker(Tracker):
    def __init__(
        self,
        out_dir: Path,
        cfg: dict[str, Any],
        project: str,
        name: str,
        group: str | None,
        mode: str,
        tags: list[str],
    ):
        try:
            import wandb
        except Exception as e:  # a broken install can fail with anything at import
            raise LineageError(
                f"logger=wandb but wandb does not import ({e}); use logger=csv or logger=none"
            ) from None
        self.online = mode == "online"
        self.run = wandb.init(
            project=project,
            name=name,
            group=group,
            config=cfg,
            dir=str(out_dir),
            mode=mode,  # type: ignore[arg-type]  # checked against wandb's literals by wandb
            tags=tags,
            reinit="finish_previous",
            settings=wandb.Settings(
                console="off", x_disable_stats=True, silent=True, disable_git=True
            ),
        )

    def lightning_logger(self, stage: str) -> Any:
        # One W&B run for the whole job: each model's training is its own series
        # (`parent/train/loss`, `independent/0/train/loss`, ...) on its own step axis.
        self.run.define_metric(f"{stage}/step", hidden=True)
        self.run.define_metric(f"{stage}/*", step_metric=f"{stage}/step")
        return _stage_logger(self.run, stage)

    def log_summary(self, metrics: dict[str, Any]) -> None:
        # the model files' absolute paths name this machine only (metrics.json keeps them)
        self.run.summary.update({k: v for k, v in metrics.items() if not k.endswith(".path")})

    def log_artifact(self, path: Path, name: str) -> None:
        if self.online:  # offline artifacts would only duplicate the zoo on disk
            import wandb

            art = wandb.Artifact(name, type="model")
            art.add_file(str(path))
            self.run.log_artifact(art)

    def log_curves(self, curves: dict[str, list[dict[str, float]]]) -> None:
        """A plot of the loss along each pair's path (its table, logged with it, holds the
        error too)."""
        import wandb

        table = wandb.Table(columns=list[str | int](CURVE_COLUMNS), data=curve_rows(curves))
        plot = wandb.plot.line(table, "alpha", "loss", stroke="pair", title="loss on the path")
        self.run.log({"determination/loss_path": plot})

    def log_verdicts(self, pairs: list[tuple[str, Verdict]]) -> None:
        import wandb

        columns, rows = verdict_table(pairs)
        self.run.log(
            {"determination/verdicts": wandb.Table(columns=list[str | int](columns), data=rows)}
        )

    def finish(self) -> None:
        self.run.finish()


def _stage_logger(run: Any, stage: str) -> Any:
    from pytorch_lightning.loggers import WandbLogger

    class StageLogger(WandbLogger):
        """Lightning's metrics under `<stage>/`, with the stage's own step."""

        def log_metrics(self, metrics: Any, step: int | None = None) -> None:
            out = {f"{stage}/{k}": v for k, v in metrics.items()}
            if step is not None:
                out[f"{stage}/step"] = step
            self.experiment.log(out)

    return StageLogger(experiment=run)


def run_tags(cfg: dict[str, Any]) -> list[str]:
    """What a W&B user filters runs by: the modification, the data and the model."""
    m = cfg["model"]
    model = str(m.get("name") or str(m.get("_target_", "")).rsplit(".", 1)[-1])
    return [str(cfg["modification"]["name"]), str(cfg["data"]["name"]), model]


def make_tracker(cfg: dict[str, Any], out_dir: Path, run_name: str, group: str | None) -> Tracker:
    kind = cfg["logger"]["name"]
    if kind == "none":
        return Tracker()
    if kind == "csv":
        return CSVTracker(out_dir)
    if kind == "wandb":
        lg = cfg["logger"]
        mode = os.environ.get("WANDB_MODE") or lg.get("mode", "offline")
        return WandbTracker(
            out_dir,
            cfg,
            lg.get("project", "lineage"),
            run_name,
            group,
            mode,
            [*dict.fromkeys([*(lg.get("tags") or []), *run_tags(cfg)])],
        )
    raise LineageError(f"logger={kind!r}: valid are wandb, csv, none")
