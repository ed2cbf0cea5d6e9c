"""A job's config composed outside the CLI exactly as the CLI composes it (tests, benches, notebooks)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

import common.config  # noqa: F401  (the resolvers the YAML files use)


def conf_dir(package: str) -> Path:
    """``conf/<package>``: the folder of a package's primary configs."""
    import conf

    return Path(conf.__file__).resolve().parent / package


def compose_run(config_dir: str | Path, overrides: Sequence[str], run_dir: str | Path | Callable[[DictConfig], Path],
                name: str = "train") -> DictConfig:
    """The primary config ``name`` of ``config_dir`` with ``overrides``, for a job writing to ``run_dir``.

    As in a CLI job: Hydra's runtime config is set (``HydraConfig.get()`` works), ``run_dir/.hydra/overrides.yaml``
    (``ckpt_path=last`` looks for it) and ``config.yaml`` (the evaluation CLIs rebuild a run's model from it) are
    written, ``paths.output_dir`` is ``run_dir`` and the ``hydra`` node is
    dropped from the returned config. ``run_dir`` may be a function of the composed config (e.g. a folder under
    its final ``paths.log_dir`` / ``task_name``, as the CLI's run dirs are).
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base="1.3"):
        cfg = compose(name, overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    out = Path(run_dir(cfg) if callable(run_dir) else run_dir)
    (out / ".hydra").mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(list(cfg.hydra.overrides.task)), out / ".hydra" / "overrides.yaml")
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
        del cfg["hydra"]
    OmegaConf.save(cfg, out / ".hydra" / "config.yaml")
    return cfg
