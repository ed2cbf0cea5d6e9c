"""Lightning callbacks the shared ``callbacks/`` config group adds to every package."""

from __future__ import annotations

import logging
import math

import lightning.pytorch as pl

log = logging.getLogger(__name__)


class FiniteLossGuard(pl.Callback):
    """Stop at the first non-finite training loss with a message that says where, instead of training on NaN."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        value = float(loss.detach()) if hasattr(loss, "detach") else float(loss)
        if not math.isfinite(value):
            lrs = [g["lr"] for opt in trainer.optimizers for g in opt.param_groups]
            raise FloatingPointError(
                f"training loss is {value} at epoch {trainer.current_epoch}, batch {batch_idx} "
                f"(learning rates {lrs}); lower the learning rate or check the batch data"
            )


class RngState(pl.Callback):
    """Save the torch/numpy/python RNG states in every checkpoint and restore them on resume.

    Without this a resumed run shuffles (and drops out) differently from an uninterrupted one, so
    "resume gives the same final metrics" would only hold approximately. Stored as plain tensors and ints,
    so checkpoints still load with ``weights_only=True``.
    """

    def state_dict(self) -> dict:
        import random

        import numpy as np
        import torch

        kind, keys, pos, has_gauss, cached = np.random.get_state()
        py_version, py_state, py_gauss = random.getstate()
        return {
            "torch": torch.get_rng_state(),
            "numpy": [kind, torch.as_tensor(keys.astype("int64")), int(pos), int(has_gauss), float(cached)],
            "python": [py_version, list(py_state), py_gauss],
        }

    def load_state_dict(self, state: dict) -> None:
        import random

        import numpy as np
        import torch

        torch.set_rng_state(state["torch"])
        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype("uint32"), pos, has_gauss, cached))
        py_version, py_state, py_gauss = state["python"]
        random.setstate((py_version, tuple(py_state), py_gauss))


class ValidateFinalEpoch(pl.Callback):
    """Validate on the last epoch whatever ``check_val_every_n_epoch`` says.

    Lightning validates only when ``epoch + 1`` is a multiple of ``check_val_every_n_epoch``, so a run whose
    ``max_epochs`` is not one (``trainer.max_epochs=3`` against vlm's 5, a short sweep trial) ends without the
    monitored val metric: ``optimized_metric`` is missing or stale and the checkpoint monitor never sees the
    final weights. For the last epoch only, validate as if N were 1 (so ModelCheckpoint also saves at that
    epoch's end, as it does for N=1); the setting is put back when fitting ends.
    """

    def __init__(self) -> None:
        self._every: int | None = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        every, last = trainer.check_val_every_n_epoch, trainer.max_epochs
        if every is None or every <= 1 or last is None or last < 1 or trainer.current_epoch != last - 1:
            return
        if last % every:
            self._every = every
            trainer.check_val_every_n_epoch = 1

    def on_fit_end(self, trainer, pl_module) -> None:
        if self._every is not None:
            trainer.check_val_every_n_epoch, self._every = self._every, None


def _scalars(metrics, prefixes: tuple[str, ...]) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        if k.startswith(prefixes) and getattr(v, "numel", lambda: 1)() == 1:
            out[k] = float(v)
    return out


def metrics_text(metrics: dict[str, float]) -> str:
    """``val/loss 1.234 · val/score 0.5`` : four significant digits, the way a person reads them."""
    return " · ".join(f"{k} {v:.4g}" for k, v in sorted(metrics.items()))


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class EpochLines(pl.callbacks.ProgressBar):
    """The progress "bar" for output nobody watches live (a file, nohup, SLURM, CI): one plain log line per
    training epoch with the epoch's loss, the validation metrics when it validated, its time and the ETA::

        epoch 3/30 · train/loss_epoch 1.234 · val/loss 1.1 · val/score 0.52 · 12s · ETA 5m24s

    It logs through :mod:`logging`, so a Hydra job writes it to stdout and to ``<run dir>/<task>.log``."""

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self._fit_start = 0.0
        self._epoch_start = 0.0
        self._epochs_done = 0
        self._val: dict[str, float] = {}

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer, pl_module) -> None:
        import time

        self._fit_start = time.monotonic()
        self._epochs_done = 0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        import time

        self._epoch_start = time.monotonic()
        self._val = {}

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._val = _scalars(trainer.callback_metrics, ("val/", "val_"))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        import time

        if not (self._enabled and trainer.is_global_zero):
            return
        now = time.monotonic()
        self._epochs_done += 1
        epoch, last = trainer.current_epoch + 1, trainer.max_epochs
        parts = [f"epoch {epoch}/{last}" if last and last > 0 else f"epoch {epoch}"]
        loss = _scalars(trainer.callback_metrics, ("train/loss",))
        loss = {k: v for k, v in loss.items()  # on_step+on_epoch logging adds _step/_epoch copies
                if not k.endswith("_step") and not (k.endswith("_epoch") and k.removesuffix("_epoch") in loss)}
        if loss or self._val:
            parts.append(metrics_text({**loss, **self._val}))
        parts.append(duration(now - self._epoch_start))
        if last and last > 0 and epoch < last:
            per_epoch = (now - self._fit_start) / self._epochs_done
            parts.append(f"ETA {duration(per_epoch * (last - epoch))}")
        log.info(" · ".join(parts))


class ResultsLog(pl.Callback):
    """Every validation and test result as one log line (run log and stdout under Hydra), not only in the
    progress bar or Lightning's printed table. Validation is left to :class:`EpochLines` when that is the bar
    (its epoch line carries it)."""

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or isinstance(trainer.progress_bar_callback, EpochLines):
            return
        if metrics := _scalars(trainer.callback_metrics, ("val/", "val_")):
            log.info("validation, epoch %d: %s", trainer.current_epoch + 1, metrics_text(metrics))

    def on_test_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero and (metrics := _scalars(trainer.callback_metrics, ("test/", "test_", "train/"))):
            metrics = {k: v for k, v in metrics.items() if not k.startswith("train/loss")}
            log.info("test: %s", metrics_text(metrics))


def progress_bar():
    """Lightning's Rich bar on a terminal; :class:`EpochLines` when stdout is a file or a pipe."""
    import sys

    if sys.stdout.isatty():
        from lightning.pytorch.callbacks import RichProgressBar

        return RichProgressBar()
    return EpochLines()


def device_text(trainer) -> str:
    """``cpu``, ``cuda (NVIDIA H200)``, ``4x cuda (NVIDIA H200)``: what the run ran on."""
    root = trainer.strategy.root_device
    name = root.type
    if root.type == "cuda":
        import torch

        name += f" ({torch.cuda.get_device_name(root)})"
    n = trainer.num_devices * trainer.num_nodes
    return f"{n}x {name}" if n > 1 else name


SUMMARY_PREFIX = "summary/"
SUMMARY_DIGITS = 6  # float32 metrics as MLflow shows them otherwise: 0.9888888597488403


class RunSummary(pl.Callback):
    """What a person looks for first on a run's MLflow page: the device and epochs as tags, and after testing
    the run's key metrics (``metrics``: the package's ``report_metrics``; empty: every ``test/*``) again as ``summary/<name>``, rounded
    to six digits, so they sort together instead of after a page of ``lr-*`` series."""

    def __init__(self, metrics: list[str] | None = None) -> None:
        self.metrics = list(metrics or [])

    def on_fit_start(self, trainer, pl_module) -> None:
        from common import tracking

        if trainer.is_global_zero:
            tracking.set_tags(trainer.loggers, {"device": device_text(trainer)})

    def on_train_end(self, trainer, pl_module) -> None:
        from common import tracking

        if trainer.is_global_zero:
            tracking.set_tags(trainer.loggers, {"epochs": trainer.current_epoch})

    def on_test_end(self, trainer, pl_module) -> None:
        from common import tracking

        if not trainer.is_global_zero:
            return
        found = _scalars(trainer.callback_metrics, ("test/",))
        if self.metrics:
            found = {k: v for k, v in _scalars(trainer.callback_metrics, tuple(self.metrics)).items() if k in self.metrics}
        found = {k: round(v, SUMMARY_DIGITS) for k, v in found.items() if math.isfinite(v)}
        tracking.log_metrics(trainer.loggers, {SUMMARY_PREFIX + k: v for k, v in found.items()})
