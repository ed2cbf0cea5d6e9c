"""LightningModule: next-token loss on assistant tokens, per-group optimiser, brand recalls of generated captions."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch

from common import io, optim, tracking
from common.distributed import all_ranks, merge_shards
from vlm import evaluation, policy
from vlm.chat import IGNORE
from vlm.models.vlm import VLM

log = logging.getLogger(__name__)


class CaptionModule(pl.LightningModule):
    def __init__(self, vlm: VLM, optim_cfg, scheduler_cfg, lr_groups, eval_cfg, matcher, export_info: dict | None = None):
        super().__init__()
        self.vlm = vlm
        self.optim_cfg, self.scheduler_cfg, self.lr_groups = optim_cfg, scheduler_cfg, lr_groups
        self.eval_cfg = eval_cfg
        self.matcher = matcher
        self.export_info = export_info or {}
        self.strict_loading = False  # checkpoints hold only what trained; the rest is rebuilt from config
        self._trainable = {f"vlm.{n}" for n in policy.trainable_names(vlm)}
        self._preds: dict[int, list[dict]] = {}
        self.last_preds: dict[str, list[dict]] = {}
        self.split_names = {"val": ["val", "train"], "test": ["test", "train"]}

    # ---- training -------------------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        for m in getattr(self.vlm, "frozen_modules", []):
            m.eval()

    # The model behind the module: a subclass for another model kind overrides these four (vlm.hf_module).
    def _loss(self, batch) -> torch.Tensor:
        return self.vlm(batch["input_ids"], batch["attention_mask"], batch["labels"], batch["pixels"])

    def _batch_size(self, batch) -> int:
        return len(batch["prompts"])

    def _captions(self, batch) -> tuple[list[str], torch.Tensor]:
        """Greedy (or configured) captions of a batch and each sample's image for the grid (float, 0..1)."""
        ec = self.eval_cfg
        out = self.vlm.generate(batch["pixels"], batch["prompts"], max_new_tokens=ec.max_new_tokens,
                                num_beams=ec.num_beams, do_sample=ec.do_sample, temperature=ec.temperature,
                                top_p=ec.top_p)
        texts = self.vlm.tokenizer.batch_decode(out, skip_special_tokens=True)
        ends = np.cumsum(batch.get("n_tiles") or [1] * len(texts))
        return texts, batch["pixels"][torch.as_tensor(ends - 1)]  # each sample's last tile: its thumbnail when tiled

    def _param_groups(self) -> list[dict]:
        return policy.param_groups(self.vlm, self.optim_cfg.lr, self.optim_cfg.weight_decay, self.lr_groups)

    def _export(self, output_dir: Path) -> Path:
        from vlm.captioner import save_captioner

        return save_captioner(self.vlm, Path(output_dir) / "captioner", self.export_info)

    def training_step(self, batch, batch_idx):
        loss = self._loss(batch)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=self._batch_size(batch))
        return loss

    def configure_optimizers(self):
        groups = self._param_groups()
        return optim.configure(groups, self.optim_cfg, self.scheduler_cfg, self.trainer.estimated_stepping_batches)

    # ---- checkpoints: only what trained ----------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in self._trainable}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        missing = self._trainable - set(checkpoint["state_dict"])
        if missing:
            raise RuntimeError(f"checkpoint lacks {len(missing)} trainable tensors, e.g. {sorted(missing)[:3]}")

    # ---- evaluation ------------------------------------------------------------------------------------
    def _eval_step(self, batch, stage: str, dataloader_idx: int):
        if dataloader_idx == 0 and bool((batch["labels"] != IGNORE).any()):  # records read without a caption: no loss
            loss = self._loss(batch)
            self.log(f"{stage}/loss", loss, batch_size=self._batch_size(batch), add_dataloader_idx=False, sync_dist=True)
        texts, thumbs = self._captions(batch)
        for meta, text, px in zip(batch["meta"], texts, thumbs, strict=True):
            row = {**meta, "pred": text.strip()}
            if len(self._preds.setdefault(dataloader_idx, [])) < self.eval_cfg.grid_samples and stage == "test":
                row["_pixels"] = (px * 255).round().byte().cpu().numpy()
            self._preds[dataloader_idx].append(row)

    def _gather_preds(self) -> None:
        """Under DDP each rank captioned its shard: every rank gets all captions back in dataset order, each once."""
        world = self.trainer.world_size
        if world == 1:
            return
        parts = all_ranks(self._preds, world)
        self._preds = {idx: merge_shards([part.get(idx, []) for part in parts], key=lambda row: row["id"])
                       for idx in sorted({i for part in parts for i in part})}

    def _eval_end(self, stage: str) -> None:
        self._gather_preds()
        names = self._names(stage)
        scores = {}
        for idx, preds in sorted(self._preds.items()):
            split = names[idx] if idx < len(names) else f"{stage}{idx}"
            r = evaluation.recalls(preds, self.matcher)
            for k, v in r.items():
                if not math.isnan(v):
                    self.log(f"{split}/{k}", v, add_dataloader_idx=False)
            scores[split] = evaluation.score(r)
            self.last_preds[split] = preds
        if stage in scores:
            self.log(f"{stage}/score", scores[stage], prog_bar=True, add_dataloader_idx=False)
        self._preds = {}

    def _names(self, stage: str) -> list[str]:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and hasattr(dm, "eval_split_names"):
            return dm.eval_split_names(stage)
        return self.split_names[stage]

    def on_validation_epoch_start(self) -> None:
        self._preds = {}

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        self._eval_step(batch, "val", dataloader_idx)

    def on_validation_epoch_end(self) -> None:
        self._eval_end("val")

    def on_test_epoch_start(self) -> None:
        self._preds = {}

    def test_step(self, batch, batch_idx, dataloader_idx: int = 0):
        self._eval_step(batch, "test", dataloader_idx)

    def on_test_epoch_end(self) -> None:
        self._eval_end("test")

    # ---- end of run: table, predictions, plots, export ---------------------------------------------------
    def on_run_end(self, trainer, datamodule, output_dir: Path, loggers) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1}
        export = self._export(Path(output_dir))
        for split, preds in self.last_preds.items():
            rows = [{k: v for k, v in p.items() if not k.startswith("_")} for p in preds]
            for r in rows:
                r["correct"] = evaluation.correct(r, self.matcher)
            path = io.write_jsonl(Path(output_dir) / f"predictions_{split}.jsonl", rows)
            tracking.log_artifact(loggers, path, "predictions")
        test = self.last_preds.get("test", [])
        with_px = [p for p in test if "_pixels" in p]
        name = evaluation.run_name(loggers) or Path(output_dir).name
        if with_px:
            fig = evaluation.sample_grid(with_px, [p["_pixels"] for p in with_px], self.matcher,
                                         self.eval_cfg.grid_samples, title=f"test split · run {name}")
            tracking.save_figure(loggers, fig, Path(output_dir) / "samples_grid.png", "plots")
        if "test/none_recall" in metrics and "test/none_brand_recall" in metrics:
            current = {"none_recall": metrics["test/none_recall"], "none_brand_recall": metrics["test/none_brand_recall"]}
            fig = evaluation.tradeoff_plot(evaluation.runs_for_tradeoff(loggers), current, run=name)
            tracking.save_figure(loggers, fig, Path(output_dir) / "none_tradeoff.png", "plots")
        table = evaluation.recall_table(metrics)
        io.write_text(Path(output_dir) / "recalls.md", table + "\n")
        tracking.log_artifact(loggers, Path(output_dir) / "recalls.md")
        train_all = len(getattr(datamodule, "records", {}).get("train", []))
        train_seen = len(self.last_preds.get("train", []))
        if 0 < train_seen < train_all:  # the train recalls come from data.train_eval_size images: say so
            tracking.set_tags(loggers, {"train_eval_subset": f"{train_seen} of {train_all}"})
        log.info("captioner saved to %s", export)
        log.info("brand recalls (greedy captions):\n%s", table)
