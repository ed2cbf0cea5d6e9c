"""Lightning callbacks the shared ``callbacks/`` config group adds to every package."""

from __future__ import annotations

import math

import lightning.pytorch as pl


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
