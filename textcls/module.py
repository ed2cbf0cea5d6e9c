"""The LightningModule: loss, optimiser, threshold tuning, metrics, kNN few-shot vote, end-of-run report.

Everything needed to rebuild the classifier (model config, label space, tokenizer vocabulary, decoding
settings) is in the checkpoint's hyper-parameters as plain lists/dicts/strings, so
``TextClassifier.load_from_checkpoint(path, weights_only=True)`` gives back a working tagger. The tuned
per-label thresholds and the pos_weight are buffers: they travel in the state dict of the checkpoint they
were tuned for.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch

from common import checkpoints, optim
from common.distributed import gathered_arrays
from common.errors import ConfigError
from textcls import decoding, scores
from textcls.data import LabelSpace, TextDataset, collate
from textcls.ensemble import combine_outputs
from textcls.knn import knn_vote
from textcls.losses import LOSSES, loss_fn, resolve_pos_weight
from textcls.report import write_evaluation
from textcls.schemas import ModuleConfig
from textcls.synth import Doc
from textcls.tokenize import encoder_from_state

log = logging.getLogger(__name__)


def build_net(model_cfg: dict, vocab_size: int, num_labels: int, pad_id: int = 0, embedding_weights=None):
    from hydra.utils import instantiate

    extra = {"embedding_weights": embedding_weights} if embedding_weights is not None else {}
    return instantiate(dict(model_cfg), vocab_size=vocab_size, num_labels=num_labels, pad_id=pad_id, _convert_="all", **extra)


class TextClassifier(pl.LightningModule):
    def __init__(
        self,
        model: dict,
        space: dict,
        encoder: dict,
        module: dict,
        label_counts: list[float] | None = None,
        n_train: int = 0,
        embedding_weights: torch.Tensor | None = None,
        optim: dict | None = None,
        scheduler: dict | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["embedding_weights"])
        self.space = LabelSpace.from_state(space)
        self.cfg = ModuleConfig(**module)
        if self.cfg.loss not in LOSSES or self.cfg.loss == "ce":
            raise ConfigError(f"module.loss: expected 'bce' or 'focal', got {self.cfg.loss!r}")
        self.loss_kind = "ce" if self.space.task == "multiclass" else self.cfg.loss
        n_labels = len(self.space.labels)
        vocab_size = len(encoder["tokens"]) + 2 if encoder["kind"] == "vocab" else 0
        self.pad_id = 0 if encoder["kind"] == "vocab" else encoder.get("pad_id", 0)
        self.net = build_net(model, vocab_size, n_labels, self.pad_id, embedding_weights)
        pw = resolve_pos_weight(self.cfg.pos_weight, label_counts or [1.0] * n_labels, n_train, self.cfg.pos_weight_max)
        self.register_buffer("pos_weight", pw if pw is not None else torch.ones(n_labels), persistent=True)
        self.use_pos_weight = pw is not None
        self.register_buffer("thresholds", torch.full((n_labels,), float(self.cfg.threshold), dtype=torch.float64))
        unknown = [label for label in self.cfg.knn_labels if label not in self.space.index]
        if unknown:
            raise ConfigError(f"module.knn_labels: {unknown} are not labels of this task ({self.space.labels[:6]}...)")
        if self.cfg.ensemble_mode is not None:
            if self.cfg.ensemble_mode not in ("intersection", "union", "mean"):
                raise ConfigError(f"module.ensemble_mode: expected intersection, union or mean, got {self.cfg.ensemble_mode!r}")
            if not self.cfg.ensemble_ckpts:
                raise ConfigError("module.ensemble_ckpts: give the other members' checkpoints, e.g. [/path/bert.ckpt]")
        self._outputs: dict[str, list] = {}
        self.test_result: dict[str, Any] | None = None
        self._encoder = None

    # -- inference helpers
    @property
    def encoder(self):
        if self._encoder is None:
            self._encoder = encoder_from_state(self.hparams.encoder)
        return self._encoder

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.net(ids)

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits, 1) if self.space.task == "multiclass" else torch.sigmoid(logits)

    def decode(self, probs: np.ndarray, thresholds: np.ndarray | None = None) -> np.ndarray:
        thr = self.thresholds.cpu().numpy() if thresholds is None else thresholds
        return decoding.decode(probs, self.space.task, thr, self.cfg.top_k, self.space.parents)

    @torch.no_grad()
    def predict_loader(self, loader, embed: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``(probs, targets, embeddings|None)`` over a loader, in eval mode."""
        was = self.training
        self.eval()
        probs, targets, embs = [], [], []
        for batch in loader:
            ids = batch["ids"].to(self.device)
            if embed:
                e = self.net.encode(ids)
                embs.append(e.float().cpu())
                logits = self.net.classifier(e)
            else:
                logits = self(ids)
            probs.append(self.probs(logits).float().cpu())
            targets.append(batch["target"])
        self.train(was)
        return (
            torch.cat(probs).numpy(), torch.cat(targets).numpy(), torch.cat(embs).numpy() if embed else None,
        )

    def predict_docs(self, docs: Sequence[Doc], batch_size: int = 128, labelled: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """``(probs, targets|None)`` on ``docs`` (targets from their labels when ``labelled``)."""
        enc = self.encoder
        targets = self.space.encode_many(docs) if labelled else np.zeros((len(docs), len(self.space.labels)), np.float32)
        ds = TextDataset(docs, enc.encode_many([d.text for d in docs]), targets)
        loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, collate_fn=collate(enc.pad_id))
        probs, _, _ = self.predict_loader(loader)
        return probs, (targets if labelled else None)

    # -- training
    def _loss(self, logits, target):
        return loss_fn(self.loss_kind, logits, target, self.pos_weight if self.use_pos_weight else None, self.cfg.focal_gamma)

    def training_step(self, batch, batch_idx):
        loss = self._loss(self(batch["ids"]), batch["target"])
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(batch["ids"]))
        return loss

    def _collect(self, stage: str, batch):
        logits = self(batch["ids"])
        loss = self._loss(logits, batch["target"])
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, prog_bar=stage == "val", batch_size=len(batch["ids"]),
                 sync_dist=True)
        out = self._outputs.setdefault(stage, [])
        out.append((self.probs(logits).detach().float().cpu(), batch["target"].cpu(), batch["index"].cpu()))

    def validation_step(self, batch, batch_idx):
        self._collect("val", batch)

    def test_step(self, batch, batch_idx):
        self._collect("test", batch)

    def _gathered(self, stage: str):
        """This split's ``(probs, targets, index)``, gathered from every rank (each item once, dataset order)."""
        rows = self._outputs.pop(stage, [])
        local = [torch.cat([r[i] for r in rows]).numpy() for i in range(3)]
        return gathered_arrays(local, self.trainer.world_size, key=2)

    def _log_metrics(self, stage: str, targets, pred) -> dict[str, float]:
        values = scores.metrics(targets, pred, self.space.task, self.space.labels, self.space.parents)
        for k, v in values.items():
            self.log(f"{stage}/{k}", v, prog_bar=k in ("micro_f1", "gate_f1", "f1", "acc"))
        return values

    def on_validation_epoch_end(self):
        if "val" not in self._outputs:
            return
        probs, targets, _ = self._gathered("val")
        if self.cfg.tune_thresholds and self.space.task != "multiclass" and not self.trainer.sanity_checking:
            thr = decoding.tune_thresholds(probs, targets, self.cfg.threshold)
            self.thresholds.copy_(torch.as_tensor(thr, dtype=torch.float64))
        self._log_metrics("val", targets, self.decode(probs))

    def on_test_epoch_end(self):
        if "test" not in self._outputs:
            return
        probs, targets, index = self._gathered("test")
        thresholds = self.thresholds.cpu().numpy().copy()
        if self.cfg.knn_k > 0 and self.cfg.knn_labels:
            probs, thresholds = self._knn(probs, thresholds, index)
        if self.cfg.ensemble_mode:
            probs, pred = self._ensemble(probs, thresholds, index)
        else:
            pred = self.decode(probs, thresholds)
        values = self._log_metrics("test", targets, pred)
        self.test_result = {"probs": probs, "targets": targets, "pred": pred, "index": index, "metrics": values}

    def _knn(self, probs, thresholds, index):
        dm = self.trainer.datamodule
        _, bank_targets, bank = self.predict_loader(dm.train_eval_dataloader(), embed=True)
        _, _, query = self.predict_loader(dm.test_dataloader(), embed=True)
        votes = knn_vote(bank, bank_targets, query, self.cfg.knn_k)
        probs = probs.copy()
        for label in self.cfg.knn_labels:
            j = self.space.index[label]
            probs[:, j] = votes[index, j] if len(index) == len(votes) else votes[:, j]
            thresholds[j] = self.cfg.knn_threshold
        log.info("kNN vote (k=%d) decides %s", self.cfg.knn_k, self.cfg.knn_labels)
        return probs, thresholds

    def _ensemble(self, probs, thresholds, index):
        """This model's test outputs combined with the members' (:func:`textcls.ensemble.combine_outputs`)."""
        docs = [self.trainer.datamodule.test.docs[i] for i in index]
        members = [checkpoints.load_module(TextClassifier, p, f"module.ensemble_ckpts[{i}]")
                   for i, p in enumerate(self.cfg.ensemble_ckpts)]
        for m in members:
            if m.space.labels != self.space.labels:
                raise ConfigError("module.ensemble_ckpts: members must have the same labels as this model")
        others = [(m, m.predict_docs(docs, labelled=False)[0]) for m in members]
        log.info("test metrics are the %s of this model and %d member(s)", self.cfg.ensemble_mode, len(members))
        return combine_outputs(self, probs, thresholds, others, self.cfg.ensemble_mode)

    def configure_optimizers(self):
        return optim.from_hparams(self)

    # -- end of run: report, plots, predictions -> output dir and MLflow
    def on_run_end(self, trainer, datamodule, output_dir: Path, loggers) -> None:
        if self.test_result is None:
            return
        r = self.test_result
        docs = [datamodule.test.docs[i] for i in r["index"]]
        write_evaluation(
            Path(output_dir) / "eval", docs, r["targets"], r["probs"], r["pred"], self.space, loggers=loggers,
            title="test split",
        )
