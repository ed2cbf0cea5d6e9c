"""``python -m vlm.eval ckpt=<ckpt file> | <run dir> | untrained``: test recalls of any saved checkpoint, of
every checkpoint a run saved (one MLflow run each, so ``make report`` shows one row per epoch), or of the
untrained model (the baseline row). None of them trains or returns ``optimized_metric``.

Each evaluation is ``common.run.train`` with ``train=false`` and ``ckpt_path=<the checkpoint>`` on the config
of the run that saved it (``<run>/.hydra/config.yaml``), so the model is rebuilt exactly as it trained; its
MLflow run's ``overrides`` tag names the checkpoint and the epochs it had trained (``epoch=5`` for
``epoch_004.ckpt``: Lightning counts epochs from 0 in file names).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import OmegaConf, open_dict

from common import entry
from common.errors import ConfigError
from vlm.schemas import schemas_for

log = logging.getLogger(__name__)
SPLITS = ("test",)


def checkpoints(path: Path) -> list[tuple[Path, dict]]:
    """``[(file, {epoch, global_step})]`` for a ``.ckpt`` file or a run dir's ``checkpoints/``, by epoch; a
    ``last.ckpt`` that repeats a named checkpoint's step is left out."""
    import torch

    if path.is_file():
        files = [path]
    elif (path / "checkpoints").is_dir():
        files = sorted((path / "checkpoints").glob("*.ckpt"), key=lambda f: (f.name.startswith("last"), f.name))
    else:
        raise ConfigError(f"ckpt: {path} is neither a checkpoint file nor a run dir with checkpoints/")
    found, seen = [], set()
    for f in files:
        try:
            state = torch.load(f, map_location="cpu", weights_only=True, mmap=True)
        except Exception as e:
            raise ConfigError(f"ckpt: cannot read {f}: {type(e).__name__}: {str(e).splitlines()[0]}") from None
        key = (int(state.get("epoch", -1)), int(state.get("global_step", -1)))
        if key in seen:
            continue
        seen.add(key)
        found.append((f, {"epoch": key[0] + 1, "global_step": key[1]}))
    if not found:
        raise ConfigError(f"ckpt: no *.ckpt under {path / 'checkpoints'}")
    return sorted(found, key=lambda x: (x[1]["epoch"], x[1]["global_step"]))


def run_config(ckpt: Path):
    """The saving run's composed config (``<run>/.hydra/config.yaml`` beside ``<run>/checkpoints/``)."""
    f = ckpt.parent.parent / ".hydra" / "config.yaml"
    if not f.is_file():
        raise ConfigError(f"ckpt: {ckpt} has no run config at {f} (was it saved by python -m vlm.train?)")
    return OmegaConf.load(f)


def _job(cfg, base, out: Path, ckpt: Path | None, label: list[str], tags: dict[str, str]):
    """``base`` as a test-only job: this command's paths / logger / trainer, output under ``out``."""
    job = OmegaConf.create(OmegaConf.to_container(base, resolve=False))
    own = OmegaConf.to_container(cfg, resolve=True)
    with open_dict(job):
        for key in ("paths", "logger", "trainer", "callbacks", "package"):
            job[key] = own.get(key)
        job.paths.output_dir = str(out)
        job.task_name, job.train, job.test, job.optimized_metric = own["task_name"], False, True, None
        job.ckpt_path = str(ckpt) if ckpt else None
        if job.get("logger") and job.logger.get("mlflow"):
            job.logger.mlflow.tags = {**(job.logger.mlflow.get("tags") or {}), **tags,
                                      "overrides": json.dumps(label)}
    return job


def evaluate(cfg) -> list[dict]:
    from hydra.core.hydra_config import HydraConfig

    from common import run
    from vlm.build import build

    if cfg.split not in SPLITS:
        raise ConfigError(f"split: {cfg.split!r} is not evaluated here (one of {', '.join(SPLITS)}); "
                          "the val split is the one checkpoints were chosen on")
    out = Path(cfg.paths.output_dir)
    cli = [o for o in (HydraConfig.get().overrides.task if HydraConfig.initialized() else [])
           if not o.startswith("ckpt=")]
    if str(cfg.ckpt) == "untrained":
        jobs = [(None, cfg, {"epoch": 0}, out / "untrained")]
    else:
        found = checkpoints(Path(str(cfg.ckpt)))
        jobs = [(f, run_config(f), meta, out / f.stem) for f, meta in found]
    results = []
    for ckpt, base, meta, job_out in jobs:
        name = str(ckpt) if ckpt else "untrained"
        label = [*cli, f"ckpt={name}", f"epoch={meta['epoch']}"]
        tags = {"eval_ckpt": name, "epoch": str(meta["epoch"])}
        source = ckpt.parent.parent / "mlflow_run_id" if ckpt else None
        if source is not None and source.is_file():
            tags["source_run_id"] = source.read_text().strip()
        job = _job(cfg, base, job_out, ckpt, label, tags)
        log.info("evaluating %s (epoch %s)", name, meta["epoch"])
        run.train(job, build=build, schemas=schemas_for(job))
        metrics = json.loads((job_out / "metrics.json").read_text())
        results.append({"ckpt": name, **meta, **metrics})
    rows = ["| ckpt | epoch | " + " | ".join(cfg.report_metrics) + " |", "|---" * (2 + len(cfg.report_metrics)) + "|"]
    for r in results:
        cells = [f"{r[k]:.3f}" if k in r else "-" for k in cfg.report_metrics]
        rows.append(f"| {r['ckpt']} | {r['epoch']} | " + " | ".join(cells) + " |")
    print("\n".join(rows))
    return results


@entry.main("vlm", config_name="eval")
def main(cfg):
    evaluate(cfg)


if __name__ == "__main__":
    main()
