"""``python -m textcls.pretrain [+exp=NAME] pretrain.out=DIR``: masked-LM pre-training of the BERT-class encoder
on the training part of the configured data (domain-adaptive pre-training; val/test text is never read for
training), then ``python -m textcls.train [+exp=NAME] model=bert model.name_or_path=DIR`` fine-tunes it."""

from __future__ import annotations

import shutil
from pathlib import Path

from omegaconf import OmegaConf

from common import entry
from common.errors import ConfigError
from textcls import mlm
from textcls.build import data_config
from textcls.data import TextDataModule
from textcls.mlm import PretrainConfig


def pretrain(cfg) -> float:
    pcfg: PretrainConfig = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(PretrainConfig), cfg.pretrain))
    out = Path(pcfg.out)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"pretrain.out: {out} exists and is not empty; give a new folder")
    dm = TextDataModule(data_config(cfg))
    trainer = OmegaConf.to_container(cfg.trainer, resolve=True)
    keep = {k: trainer[k] for k in ("accelerator", "devices", "precision") if k in trainer}
    tmp = out.with_name(f".{out.name}.tmp")
    if tmp.exists():  # left by an interrupted run: save_pretrained would mix old and new files
        shutil.rmtree(tmp)
    metrics = mlm.pretrain(
        [d.text for d in dm.train.docs], [d.text for d in dm.val.docs], PretrainConfig(**{**pcfg.__dict__, "out": str(tmp)}),
        OmegaConf.to_container(cfg.model, resolve=True), dm.cfg.max_len, OmegaConf.to_container(cfg.optim, resolve=True),
        OmegaConf.to_container(cfg.scheduler, resolve=True), keep, cfg.seed,
    )
    if out.exists():
        out.rmdir()
    tmp.replace(out)  # the folder appears whole or not at all
    print(f"masked-LM pre-training: {', '.join(f'{k} {v:.4f}' for k, v in metrics.items())}; "
          f"fine-tune with model=bert model.name_or_path={out}")
    return metrics.get("val/mlm_loss", float("nan"))


@entry.main("textcls", config_name="pretrain")
def main(cfg):
    return pretrain(cfg)


if __name__ == "__main__":
    main()
