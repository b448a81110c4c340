"""Lightning trains; everything else in lineage is plain torch.

`Classifier` is the one LightningModule for supervised training. Modifications that
need another loss (distillation, extraction, adversarial) subclass it and override
`loss`, so optimisers, schedulers and logging stay in one place.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import torchmetrics
from torch import nn

from .errors import LineageError
from .settings import LR_MAX, knob

TrainCfg = Mapping[str, Any]


@dataclass
class TrainConf:
    """The train group: how a parent or reference trains, and (for the optimizer and its
    schedule) how a modification trains, with the modification's own epochs and lr."""

    epochs: int = knob(10, lo=0, hi=10**6)  # conf/train/default.yaml: ${data.epochs}
    lr: float = knob(3e-3, lo=0, hi=LR_MAX, ends="(]")
    optimizer: str = knob("adam", choices=("adam", "sgd"))
    momentum: float = knob(0.9, lo=0, hi=1, ends="[)")  # sgd only
    weight_decay: float = knob(0.0, lo=0, hi=1)
    scheduler: str = knob("cosine", choices=("none", "cosine"))  # cosine: T_max = epochs
    accelerator: str = knob("auto", choices=("auto", "cpu", "gpu", "cuda"))  # CUDA if present
    # the order of the training batches: by the seed of the model being trained (models of
    # different seeds see different orders), or "fixed" (one order for all, seed 0)
    shuffle: str = knob("seed", choices=("seed", "fixed"))
    # Other recipes for independent models (experiments.recipe_shift), off by default. A key
    # added here later than the zoo's first models must be in zoo.LATER_TRAIN_KEYS, so that
    # at its default it leaves every stored model's id as it was.
    label_smoothing: float = knob(0.0, lo=0, hi=1, ends="[)")
    augment_noise: float = knob(0.0, lo=0, hi=10)  # std of Gaussian noise added to inputs


# Lightning's hints about dataloader workers and tiny datasets are noise for in-memory
# tensors; its hint that `srun` exists but is unused is noise for one device per job (its
# checkpoint connector probes SLURM at every fit, whatever environment the Trainer has).
for pattern in (
    ".*`srun` command is available.*",
    ".*does not have many workers.*",
    ".*number of training batches.*",
    ".*LeafSpec.*",
    ".*is_grad_enabled.*",
):
    warnings.filterwarnings("ignore", pattern)
log = logging.getLogger("lineage")
logging.getLogger("pytorch_lightning.utilities.rank_zero").setLevel(logging.WARNING)
logging.getLogger("pytorch_lightning.accelerators.cuda").setLevel(logging.WARNING)


class Classifier(pl.LightningModule):
    def __init__(self, model: nn.Module, cfg: TrainCfg, num_classes: int):
        super().__init__()
        self.model = model
        self.cfg = dict(cfg)
        self._sums = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, seen
        self.val_acc = torchmetrics.Accuracy("multiclass", num_classes=num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def loss(self, logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y, label_smoothing=self.cfg.get("label_smoothing", 0.0))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        x, y = batch
        noise = self.cfg.get("augment_noise", 0.0)
        if noise:
            x = x + noise * torch.randn_like(x)
        logits = self(x)
        loss = self.loss(logits, x, y)
        # Summed here and logged once per epoch: Lightning's per-step `log` with epoch
        # reduction cost a third of a small model's training time.
        with torch.no_grad():
            self._sums += torch.stack(
                [loss.detach() * len(y), (logits.argmax(1) == y).sum(), y.new_tensor(len(y))]
            ).to(self._sums)
        return loss

    def on_train_epoch_start(self) -> None:
        self._sums = torch.zeros(3, dtype=torch.float64, device=self.device)

    def on_train_epoch_end(self) -> None:
        loss_sum, correct, n = self._sums.tolist()
        if n:  # the batch-size weighted means, as Lightning's epoch reduction gives them
            self.log("train/loss", loss_sum / n, prog_bar=True)
            self.log("train/acc", correct / n, prog_bar=True)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> None:
        x, y = batch
        logits = self(x)
        self.val_acc(logits, y)
        self.log("val/loss", F.cross_entropy(logits, y), prog_bar=True)
        self.log("val/acc", self.val_acc, prog_bar=True)

    def configure_optimizers(self) -> Any:
        c = self.cfg
        params = [p for p in self.model.parameters() if p.requires_grad]
        name = c.get("optimizer", "adam")
        if name == "adam":
            opt: torch.optim.Optimizer = torch.optim.Adam(
                params, lr=c["lr"], weight_decay=c.get("weight_decay", 0.0)
            )
        elif name == "sgd":
            opt = torch.optim.SGD(
                params,
                lr=c["lr"],
                momentum=c.get("momentum", 0.9),
                weight_decay=c.get("weight_decay", 0.0),
                nesterov=True,
            )
        else:
            raise LineageError(f"train.optimizer={name!r}: valid are adam, sgd")
        if c.get("scheduler", "none") == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, c["epochs"]))
            return {"optimizer": opt, "lr_scheduler": sched}
        return opt


class EpochLog(pl.Callback):
    """Progress where no bar can show (output not a terminal: logs, CI, schedulers): a log
    line every tenth of the epochs, with the validation accuracy when there is one."""

    def __init__(self, what: str = "training"):
        self.what = what

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        n, k = int(trainer.max_epochs or 0), trainer.current_epoch + 1
        if n and (k == n or k % max(1, n // 10) == 0):
            acc = trainer.callback_metrics.get("val/acc")
            tail = f", val acc {float(acc):.4f}" if acc is not None else ""
            log.info("  %s: epoch %d/%d%s", self.what, k, n, tail)


class SettleThreads(pl.Callback):
    """At the first batch, the job's thread count for this model (runtime.settle): timed on
    the batch Lightning hands over, in eval mode without gradients, so no state, statistic
    or random draw of the training changes."""

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if batch_idx or trainer.current_epoch:
            return
        from .runtime import settle_on

        model = getattr(pl_module, "model", pl_module)
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        if isinstance(model, nn.Module) and isinstance(x, torch.Tensor):
            settle_on(model, x)


def _cluster() -> list[Any]:
    """One device per job: outside an `srun` step Lightning's SLURM probe only warns, at
    each Trainer, that `srun` exists but is unused; the plain environment is the answer."""
    if os.environ.get("SLURM_NTASKS"):
        return []
    from pytorch_lightning.plugins.environments import LightningEnvironment

    return [LightningEnvironment()]


def make_trainer(
    cfg: TrainCfg,
    logger: Any = None,
    callbacks: Iterable[pl.Callback] = (),
    epochs: int | None = None,
) -> pl.Trainer:
    """One device per job (no DDP inside a multirun), quiet bar when not on a terminal."""
    bar = bool(cfg.get("progress", True)) and sys.stderr.isatty()
    return pl.Trainer(
        plugins=_cluster(),
        max_epochs=int(cfg["epochs"] if epochs is None else epochs),
        accelerator=cfg.get("accelerator", "auto"),
        devices=1,
        deterministic=True,
        logger=logger if logger is not None else False,
        callbacks=[*callbacks, SettleThreads(), *([] if bar else [EpochLog()])],
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=bar,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
    )


def fit(
    module: pl.LightningModule,
    datamodule: pl.LightningDataModule,
    cfg: TrainCfg,
    seed: int,
    logger: Any = None,
    callbacks: Iterable[pl.Callback] = (),
    epochs: int | None = None,
) -> pl.LightningModule:
    """Seeded, deterministic Lightning fit. Returns the module with the model on CPU. The
    seed sets the initial state of every generator, and the order of the training batches
    too, unless `shuffle` is "fixed" (a lineage DataModule shuffles with `shuffle_seed`):
    models of different seeds see their data in different orders, as independently
    trained models do."""
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    from .interrupt import from_lightning
    from .runtime import rebalance

    rebalance()  # the running job's share of the cores, as other jobs start and end
    pl.seed_everything(seed, workers=True, verbose=False)
    if hasattr(datamodule, "shuffle_seed"):
        datamodule.shuffle_seed = int(seed) if cfg.get("shuffle", "seed") == "seed" else 0
    trainer = make_trainer(cfg, logger, callbacks, epochs)
    if trainer.max_epochs:
        try:
            trainer.fit(module, datamodule=datamodule)
        except SIGTERMException as e:
            # Lightning's answer to SIGTERM is a SystemExit with no code, which would exit
            # 0 as if the work were done: it is an interruption.
            raise from_lightning(e) from None
    return module.cpu()


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Logits of `model` on `x`, batched, on the model's device; returned on CPU."""
    model.eval()
    dev = next(model.parameters()).device
    return (
        torch.cat(
            [
                model(x[i : i + batch_size].to(dev)).float().cpu()
                for i in range(0, len(x), batch_size)
            ]
        )
        if len(x)
        else torch.empty(0)
    )


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    if len(y) == 0:
        raise LineageError("cannot measure accuracy on empty data")
    return float((predict(model, x).argmax(1) == y).float().mean())


def train_classifier(
    model: nn.Module, datamodule: Any, cfg: TrainCfg, seed: int, logger: Any = None
) -> tuple[nn.Module, float]:
    """Train `model` on the datamodule's task; return it (eval mode) and its test accuracy."""
    module = fit(Classifier(model, cfg, datamodule.num_classes), datamodule, cfg, seed, logger)
    assert isinstance(module, Classifier)
    model = module.model
    model.eval()
    return model, accuracy(model, datamodule.test.x, datamodule.test.y)
