"""Hydra entry point: `python run.py modification=pruning ratio=0.5`, or `-m` for sweeps."""

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from lineage.config import register_schemas

register_schemas()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from lineage.errors import LineageError
    from lineage.pipeline import run, to_container
    from lineage.report.console import summary_table
    from lineage.utils import write_json

    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    try:
        metrics = run(
            to_container(cfg),
            out_dir,
            run_name=hc.job.override_dirname or "default",
            group=Path(hc.sweep.dir).name if multirun else None,
        )
    except LineageError as e:
        logging.getLogger("lineage").error("%s", e)
        if not multirun:
            sys.exit(f"error: {e}")
        # In a sweep one bad job must not kill the others: record why, move on.
        write_json(out_dir / "error.json", {"error": str(e), "overrides": list(hc.overrides.task)})
        return
    print(summary_table(metrics))


if __name__ == "__main__":
    main()
