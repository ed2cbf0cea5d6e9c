"""A toy regression task that exercises the shared run helper exactly as a real package does."""

from __future__ import annotations

import os
import signal

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from common.data.fingerprint import fingerprint


def _send(name: str) -> None:
    """Send this process the signal ``name``. A job started in the background (``make test &``, nohup) inherits
    SIGINT ignored, and Python then installs no KeyboardInterrupt handler; the tests are about a terminal's
    Ctrl-C, so SIGINT gets Python's default handler first."""
    sig = getattr(signal, name)
    if sig == signal.SIGINT and signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    os.kill(os.getpid(), sig)

class ToyData(pl.LightningDataModule):
    def __init__(self, n: int = 256, dim: int = 8, batch_size: int = 32, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, dim, generator=g)
        w = torch.randn(dim, 1, generator=g)
        self.y = self.x @ w + 0.01 * torch.randn(n, 1, generator=g)
        self.batch_size = batch_size
        if os.environ.get("TOY_SIGNAL_IN_DATA"):  # a signal while the job builds its data, before any trainer
            _send(os.environ["TOY_SIGNAL_IN_DATA"])
        self.fingerprint = fingerprint([[round(v, 6) for v in row] for row in self.x[:, :2].tolist()])

    def _loader(self, lo: float, hi: float, shuffle: bool) -> DataLoader:
        n = len(self.x)
        sl = slice(int(lo * n), int(hi * n))
        return DataLoader(TensorDataset(self.x[sl], self.y[sl]), batch_size=self.batch_size, shuffle=shuffle)

    def train_dataloader(self):
        return self._loader(0.0, 0.6, True)

    def val_dataloader(self):
        return self._loader(0.6, 0.8, False)

    def test_dataloader(self):
        return self._loader(0.8, 1.0, False)


class ToyModule(pl.LightningModule):
    def __init__(self, dim: int = 8, lr: float = 0.05, fail: bool = False, nan_at_step: int = -1):
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Linear(dim, 1)

    def _step(self, batch, stage: str):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        if stage == "train" and self.global_step == self.hparams.nan_at_step:
            loss = loss * float("nan")
        self.log(f"{stage}/loss", loss, prog_bar=True, on_epoch=True, on_step=False)
        return loss

    def training_step(self, batch, batch_idx):
        if self.hparams.fail:
            raise RuntimeError("toy job told to fail")
        if os.environ.get("TOY_KILL_AT_STEP") == str(self.global_step):  # an outside event, not config
            raise RuntimeError(f"simulated kill at step {self.global_step}")
        if os.environ.get("TOY_SIGNAL_AT_STEP") == str(self.global_step):  # a real signal, at a known moment
            _send(os.environ.get("TOY_SIGNAL", "SIGTERM"))
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        return self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        return self._step(batch, "test")

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
