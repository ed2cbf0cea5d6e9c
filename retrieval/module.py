"""LightningModule: contrastive (InfoNCE), SigLIP sigmoid or ArcFace training of the match model; every
validation epoch embeds the split, logs recall@k / MRR / mAP@10 and the Shopee F1 at the best threshold,
and keeps that threshold (a buffer, so it travels with the checkpoint) for test and for ``retrieval.match``."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch

from common import io, optim, tracking
from common.distributed import all_ranks
from common.errors import ConfigError
from retrieval import plots, scoring
from retrieval.losses import info_nce
from retrieval.models.fusion import ArcFace, MatchModel
from retrieval.schemas import ModelConfig

log = logging.getLogger(__name__)


class RetrievalModule(pl.LightningModule):
    def __init__(self, model: dict, loss: str = ModelConfig.loss, temperature: float = ModelConfig.temperature,
                 num_classes: int = 0, arcface: dict | None = None, at_least: int = ModelConfig.at_least,
                 symmetric: bool = ModelConfig.symmetric, optim: dict | None = None, scheduler: dict | None = None):
        super().__init__()
        self.save_hyperparameters()
        if loss not in ("infonce", "siglip", "arcface"):
            raise ConfigError(f"model.loss: expected infonce|siglip|arcface, got {loss!r}")
        self.net = MatchModel(**model)
        if loss == "siglip":
            from open_clip.loss import SigLipLoss

            self.siglip = SigLipLoss()
            self.logit_scale = torch.nn.Parameter(torch.tensor(math.log(10.0)))
            self.logit_bias = torch.nn.Parameter(torch.tensor(-10.0))
        if loss == "arcface":
            if num_classes < 2:
                raise ConfigError("model.loss=arcface: needs at least 2 training groups")
            self.arcface = ArcFace(self.net.dim, num_classes, **(arcface or {}))
        self.register_buffer("threshold", torch.tensor(0.5))
        self.net.train()  # see on_train_epoch_start
        self._emb: dict[int, np.ndarray] = {}
        self.curves: dict[str, list] = {}

    def forward(self, batch: dict) -> torch.Tensor:
        return self.net(batch)

    def _global(self, t: torch.Tensor | None) -> torch.Tensor | None:
        """Under DDP the whole global batch on every rank, gradients flowing back to each rank's part: in-batch
        negatives and the loss are those of one process with the global batch (DDP's gradient mean then
        equals that process's gradient)."""
        if t is None or self.trainer.world_size == 1:
            return t
        return self.all_gather(t, sync_grads=True).flatten(0, 1)

    def training_step(self, batch, batch_idx):
        a, p = self.net(batch["anchor"]), self.net(batch["pos"])
        neg = self.net(batch["neg"]) if batch.get("neg") is not None else None
        if self.trainer.world_size > 1:
            a, p, neg = self._global(a), self._global(p), self._global(neg)
            batch = {k: None if v is None else {f: self._global(v[f]) for f in ("idx", "label") if f in v}
                     for k, v in batch.items()}
        hp = self.hparams
        if hp.loss == "infonce":
            groups_a = batch["anchor"]["idx"].new_tensor(self._group_ids(batch["anchor"]["idx"]))
            cand_idx = batch["pos"]["idx"] if neg is None else torch.cat([batch["pos"]["idx"], batch["neg"]["idx"]])
            loss = info_nce(a, p, neg, hp.temperature, groups_a, cand_idx.new_tensor(self._group_ids(cand_idx)),
                            symmetric=hp.symmetric)
        elif hp.loss == "siglip":
            loss = self.siglip(a, p, self.logit_scale.exp(), self.logit_bias)
        else:
            labels = torch.cat([batch["anchor"]["label"], batch["pos"]["label"]])
            loss = self.arcface(torch.cat([a, p]), labels)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=a.shape[0])
        return loss

    def on_train_epoch_start(self):
        # transformers' from_pretrained returns towers in eval mode and Lightning keeps submodule modes:
        # without this a pretrained tower would fine-tune with dropout off
        self.net.train()

    def _group_ids(self, idx: torch.Tensor) -> list[int]:
        cat = self.trainer.datamodule.catalog
        if not hasattr(self, "_gid"):
            uniq = {g: k for k, g in enumerate(sorted(set(cat.groups)))}
            self._gid = [uniq[g] for g in cat.groups]
        return [self._gid[int(i)] for i in idx]

    # ------------------------------------------------------------ evaluation
    def _collect(self, batch):
        e = self.net(batch).float().cpu().numpy()
        for i, v in zip(batch["idx"].tolist(), e, strict=True):
            self._emb[i] = v

    def validation_step(self, batch, batch_idx):
        self._collect(batch)

    def test_step(self, batch, batch_idx):
        self._collect(batch)

    def _gather_emb(self) -> None:
        """Under DDP each rank embedded its shard (the sampler pads with repeats): every rank gets them all."""
        self._emb = {i: v for part in all_ranks(self._emb, self.trainer.world_size) for i, v in part.items()}

    def _score(self, split_name: str, tune: bool) -> dict:
        self._gather_emb()
        dm = self.trainer.datamodule
        split = dm.splits[split_name]
        metrics, curve = scoring.score_split(self._emb, split, dm.catalog, f"{split_name}/",
                                              None if tune else float(self.threshold), self.hparams.at_least)
        self.curves[split_name] = curve
        self._emb = {}
        return metrics

    def on_validation_epoch_end(self):
        if self.trainer.sanity_checking:
            self._emb = {}
            return
        m = self._score("val", tune=True)
        self.threshold.fill_(m["val/threshold"])
        shown = ("val/f1", "val/recall_at_1")
        self.log_dict({k: v for k, v in m.items() if k not in shown})
        self.log_dict({k: m[k] for k in shown}, prog_bar=True)

    def on_test_epoch_end(self):
        self.log_dict(self._score("test", tune=False))

    def configure_optimizers(self):
        return optim.from_hparams(self)

    # ------------------------------------------------------------ end of run
    @torch.no_grad()
    def embed_split(self, datamodule, split) -> dict[int, np.ndarray]:
        self.eval()
        out = {}
        for batch in datamodule.eval_loader(split):
            batch = {k: (v.to(self.device) if torch.is_tensor(v) else v) for k, v in batch.items()}
            for i, v in zip(batch["idx"].tolist(), self.net(batch).float().cpu().numpy(), strict=True):
                out[i] = v
        return out

    def on_run_end(self, trainer, datamodule, output_dir, loggers):
        """Threshold-vs-F1 curve, a query grid (green = right match, red = wrong), test predictions CSV."""
        out = Path(output_dir)
        emb = self.embed_split(datamodule, "test")
        split, cat = datamodule.splits["test"], datamodule.catalog
        write_outputs(emb, split, cat, float(self.threshold), self.hparams.at_least, out, loggers,
                      curves={k: v for k, v in self.curves.items()})


def write_outputs(emb, split, cat, threshold, at_least, out: Path, loggers, curves: dict | None = None) -> dict:
    """Shared by training's end and ``retrieval.eval``: plots, ``predictions.csv`` (Shopee), logged to MLflow."""
    import matplotlib

    matplotlib.use("Agg")
    pool = np.stack([emb[int(i)] for i in split.pool])
    curves = dict(curves or {})
    if "test" not in curves:
        curves["test"] = scoring.f1_curve(pool, split, cat, at_least)
    fig = plots.threshold_curve(curves, threshold)
    tracking.save_figure(loggers, fig, out / "threshold_f1.png", "plots", dpi=100)
    q = np.stack([emb[int(i)] for i in split.queries])
    g = np.stack([emb[int(i)] for i in split.gallery])
    fig = plots.retrieval_grid(q, g, split, cat)
    tracking.save_figure(loggers, fig, out / "retrieval_grid.png", "plots", dpi=100)
    ids = [cat.ids[i] for i in split.pool]
    s, n = scoring.neighbours(pool)
    matches = scoring.matches_at(ids, s, n, threshold, at_least)
    path = out / "predictions.csv"
    io.write_text(path, "posting_id,matches\n" + "".join(f"{k},{' '.join(v)}\n" for k, v in matches.items()))
    tracking.log_artifact(loggers, path, "predictions")
    io.write_json(out / "threshold_f1.json", {k: [list(x) for x in v] for k, v in curves.items()})
    tracking.log_artifact(loggers, out / "threshold_f1.json", "plots")
    return matches
