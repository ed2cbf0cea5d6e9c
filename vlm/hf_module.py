"""``model=hf_vlm``: the LightningModule of a whole pre-trained VLM and ``build(cfg)`` for ``vlm.train`` / ``vlm.eval``.

The module is :class:`vlm.module.CaptionModule` (loss, per-group optimiser, the six brand recalls, MLflow rows,
checkpoints of what trained, the sample grid) with the model behind its four hooks swapped: the batch is the
processor's (``vlm.hf_data``), captions come from the model's own ``generate``, and the run's ``captioner/``
export is ``vlm.hf_captioner``'s (what ``vlm.generate`` loads).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import OmegaConf

from common.errors import ConfigError
from vlm import policy
from vlm.hf_data import HfCaptionData
from vlm.module import CaptionModule

log = logging.getLogger(__name__)


class HfCaptionModule(CaptionModule):
    def _loss(self, batch) -> torch.Tensor:
        return self.vlm(batch["inputs"], batch["labels"])

    def _batch_size(self, batch) -> int:
        return int(batch["n"])

    def _captions(self, batch) -> tuple[list[str], torch.Tensor]:
        ec = self.eval_cfg
        out = self.vlm.generate(batch["gen"], max_new_tokens=ec.max_new_tokens, num_beams=ec.num_beams,
                                do_sample=ec.do_sample, temperature=ec.temperature, top_p=ec.top_p)
        texts = self.vlm.tokenizer.batch_decode(out, skip_special_tokens=True)
        return texts, batch["thumbs"].float() / 255.0

    def _param_groups(self) -> list[dict]:
        return policy.param_groups(self.vlm, self.optim_cfg.lr, self.optim_cfg.weight_decay, self.lr_groups,
                                   group_of=self.vlm.group_of)

    def _export(self, output_dir: Path) -> Path:
        from vlm.hf_captioner import save_captioner

        return save_captioner(self.vlm, Path(output_dir) / "captioner", self.export_info)


def build(cfg):
    torch.manual_seed(cfg.seed)
    model_cfg = cfg.model
    if not Path(str(model_cfg.name_or_path)).is_dir():  # (a missing value fails here too) before any data is built
        raise ConfigError(f"model.name_or_path: no model dir at {model_cfg.name_or_path}")
    if cfg.data.with_desc:
        raise ConfigError("data.with_desc: the extra description turns are not built for model=hf_vlm")
    dm = HfCaptionData(cfg.data, 0, cfg.paths.cache_dir, seed=cfg.seed)  # the processor sizes the images
    vlm = policy.build_hf_vlm(model_cfg)
    dm.attach_processor(vlm.processor, model_cfg.max_length)
    log.info("parameters: %s", policy.count_params(vlm, group_of=vlm.group_of))
    model = OmegaConf.to_container(model_cfg, resolve=True)
    model["name_or_path"] = str(Path(str(model_cfg.name_or_path)).resolve())
    info = {"kind": "hf_vlm", "model": model, "crop": bool(cfg.data.crop), "crop_margin": float(cfg.data.crop_margin),
            "prompt": cfg.data.prompt, "brands": dm.brands, "aliases": dm.aliases}
    module = HfCaptionModule(vlm, cfg.optim, cfg.get("scheduler"), cfg.lr_groups, cfg.eval, dm.matcher, export_info=info)
    return module, dm
