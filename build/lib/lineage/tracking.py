"""Experiment tracking behind one small interface: W&B, CSV, or nothing.

wandb is imported only when logger=wandb is chosen, so logger=none and logger=csv work
even where wandb is missing or broken.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

from .errors import LineageError
from .utils import atomic_write


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

    def finish(self) -> None:
        pass


CURVE_COLUMNS = ["pair", "alpha", "loss", "error"]


def curve_rows(curves: dict[str, list[dict[str, float]]]) -> list[list[Any]]:
    return [[name, c["alpha"], c["loss"], c["error"]] for name, cs in curves.items() for c in cs]


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
        from pytorch_lightning.loggers import WandbLogger

        # One W&B run for the whole job: each training stage logs under its own prefix.
        return WandbLogger(experiment=self.run, prefix=stage)

    def log_summary(self, metrics: dict[str, Any]) -> None:
        self.run.summary.update(metrics)

    def log_artifact(self, path: Path, name: str) -> None:
        if self.online:  # offline artifacts would only duplicate the zoo on disk
            import wandb

            art = wandb.Artifact(name, type="model")
            art.add_file(str(path))
            self.run.log_artifact(art)

    def log_curves(self, curves: dict[str, list[dict[str, float]]]) -> None:
        """One table of every pair's path, and a plot of the loss along it per pair."""
        import wandb

        table = wandb.Table(columns=CURVE_COLUMNS, data=curve_rows(curves))
        plot = wandb.plot.line(table, "alpha", "loss", stroke="pair", title="loss on the path")
        self.run.log({"determination/curves": table, "determination/loss_path": plot})

    def finish(self) -> None:
        self.run.finish()


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
            list(lg.get("tags") or []),
        )
    raise LineageError(f"logger={kind!r}: valid are wandb, csv, none")
