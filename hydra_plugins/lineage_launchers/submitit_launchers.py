"""lineage's launchers: the Hydra plugins' (joblib, submitit) with a sweep that skips its
finished jobs before submitting them and always ends with its summary, whatever ended a
job (cancelled, out of memory, timed out, its worker killed). Hydra instantiates plugins
only from this namespace package; the logic lives in lineage.sweep and lineage.slurm.

Kept light to import: Hydra imports every plugin module at start.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
from omegaconf import OmegaConf

log = logging.getLogger(__name__)


class _Submitit(BaseSubmititLauncher):
    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        import submitit

        from lineage import slurm, sweep

        assert self.config is not None
        state = Singleton.get_state()
        todo = sweep.plan(self.hydra_context, self.config, job_overrides)
        if not todo:
            return []
        if self._EXECUTOR == "slurm":
            slurm.check_fits(self.params)
        p = dict(self.params)
        ex = self._EXECUTOR
        requeues = {f"{ex}_{k}": p.pop(k) for k in ["max_num_timeout"] if k in p}  # SLURM's
        executor = submitit.AutoExecutor(folder=p.pop("submitit_folder"), cluster=ex, **requeues)
        common = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in common else f"{ex}_{k}": v for k, v in p.items()})
        log.info("Submitit '%s' sweep output dir : %s", ex, self.config.hydra.sweep.dir)
        for i, overrides in todo:
            log.info("\t#%d : %s", initial_job_idx + i, " ".join(filter_overrides(overrides)))
        args = [
            (o, "hydra.sweep.dir", initial_job_idx + i, f"job_id_for_{initial_job_idx + i}", state)
            for i, o in todo
        ]
        try:
            jobs = executor.map_array(self, *zip(*args))
        except Exception as e:  # noqa: BLE001  (sbatch refused it: its own words say why)
            said = str(getattr(e, "stderr", None) or getattr(e, "output", None) or e)
            lines = [ln for ln in said.strip().splitlines() if ln.strip()]
            slurm.refuse(f"the scheduler refused the sweep: {lines[-1] if lines else e}")
        if ex == "slurm":
            watcher = slurm.SqueueWatcher(delay_s=15)
            for job in jobs:
                job.watcher = watcher
        return slurm.wait(
            jobs,
            lambda k, what: sweep.record_end(self.hydra_context, self.config, todo[k][1], what),
        )


class LocalLauncher(_Submitit):
    _EXECUTOR = "local"


class SlurmLauncher(_Submitit):
    _EXECUTOR = "slurm"
