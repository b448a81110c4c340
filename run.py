"""Hydra entry point: `python run.py modification=pruning ratio=0.5`, or `-m` for sweeps.

Exit status: 0 when every job finished; 2 with one `error: ...` line when a single run
is refused (bad input, unwritable output); 1 when a job of a sweep failed (each failed
job leaves error.json in its folder, and the others still run); 128 + N when signal N
(SIGTERM: 143) interrupted the work, which is then named on stderr.
"""

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from lineage.config import register_schemas
from lineage.interrupt import guard

register_schemas()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from lineage.errors import LineageError
    from lineage.interrupt import stage
    from lineage.pipeline import JobFailed, run, to_container
    from lineage.report.console import summary_table
    from lineage.text import printable
    from lineage.utils import write_json

    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    name = hc.job.override_dirname or "default"
    try:
        with stage(f"running job {name}"):
            metrics = run(
                to_container(cfg),
                out_dir,
                run_name=name,
                group=Path(hc.sweep.dir).name if multirun else None,
            )
    except Exception as e:
        if not multirun:
            if not isinstance(e, LineageError):
                raise  # a bug: its traceback is what a report needs
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        # In a sweep one bad job must not kill the others: record why, move on; Hydra
        # raises the first failure once every job has run, so the sweep exits non-zero.
        kind = "" if isinstance(e, LineageError) else f"{type(e).__name__}: "
        logging.getLogger("lineage").error("%s%s", kind, printable(e))
        write_json(
            out_dir / "error.json",
            {"error": f"{kind}{printable(e)}", "overrides": list(hc.overrides.task)},
        )
        raise JobFailed(f"error: job {printable(name)} failed: {kind}{printable(e)}") from None
    print(summary_table(metrics))


if __name__ == "__main__":
    guard("run.py")(main)()
