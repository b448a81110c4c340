"""lineage's joblib launcher: see submitit_launchers."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher as _Joblib

log = logging.getLogger(__name__)


class JoblibLauncher(_Joblib):
    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        from lineage import sweep

        todo = sweep.plan(self.hydra_context, self.config, job_overrides)
        if not todo:
            return []
        try:
            return super().launch([o for _, o in todo], initial_job_idx)
        except Exception as e:  # noqa: BLE001  (a worker killed: the OOM killer, a signal)
            log.error("the sweep's workers stopped: %s", e)
            for _, o in todo:  # those that finished have their results: the summary says so
                sweep.record_end(
                    self.hydra_context,
                    self.config,
                    o,
                    f"killed: a worker died ({type(e).__name__})",
                )
            return []
