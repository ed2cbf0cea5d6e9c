"""Sweeps: each package's Optuna search composes against its own config and one runs real trials; a joblib
sweep runs its jobs in parallel workers that land in the MLflow store; the GPU-only trainers and the SLURM
launcher compose and pass the start-up validation."""

from __future__ import annotations

import json

import pytest
import yaml
from hydra.utils import instantiate
from mlflow import MlflowClient
from omegaconf import OmegaConf, open_dict

from common.config import validate
from tests.scale.conftest import package_cfg
from tests.textcls.conftest import SMALL as TEXTCLS_SMALL

PACKAGES = ["vlm", "textcls", "retrieval"]


def _interval(spec: str) -> tuple[float, float] | None:
    if not spec.startswith("interval("):
        return None
    lo, hi = spec[len("interval("):-1].split(",")
    return float(lo), float(hi)


@pytest.mark.parametrize("package", PACKAGES)
def test_optuna_search_composes_for_each_package(package):
    cfg = package_cfg(package, f"hparams_search={package}_optuna")
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_ == "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"  # no -m needed
    # it optimises the package's main metric in the metric's own direction
    assert cfg.optimized_metric == cfg.monitor.metric
    assert sweeper.direction == {"max": "maximize", "min": "minimize"}[cfg.monitor.mode]
    assert sweeper.params, "an empty search space"
    for key, spec in sweeper.params.items():
        # a searched key must exist in the package's config (a typo would only fail inside the first trial)
        assert OmegaConf.select(cfg, key, default="<missing>") != "<missing>", key
        if bounds := _interval(str(spec)):
            assert bounds[0] < bounds[1]


@pytest.mark.slow
def test_textcls_optuna_runs_two_trials_and_returns_its_metric(tmp_path):
    # optim.lr is searched: a fixed value on the command line would take it out of the search space
    small = [o for o in TEXTCLS_SMALL if not o.startswith(("data.synth.n=", "trainer.max_epochs=", "optim.lr="))]
    from tests.reliability.harness import call

    sweep = tmp_path / "sweep"
    res = call(  # in this process: the trials run one after the other in it anyway (basic launcher)
        "textcls.train", "-m", "hparams_search=textcls_optuna", "hydra.sweeper.n_trials=2",
        "hydra.sweeper.sampler.n_startup_trials=2", *small, "data.synth.n=600", "trainer.max_epochs=1",
        "logger=none", f"hydra.sweep.dir={sweep}", f"paths.log_dir={tmp_path}", f"paths.cache_dir={tmp_path / 'cache'}",
    )
    assert res.code == 0, res.stderr[-3000:]
    trials = sorted(p for p in sweep.iterdir() if p.name.isdigit())
    assert [p.name for p in trials] == ["0", "1"]
    space = package_cfg("textcls", "hparams_search=textcls_optuna").hydra.sweeper.params
    values = []
    for t in trials:
        values.append(json.loads((t / "metrics.json").read_text())["val/micro_f1"])
        chosen = dict(o.split("=", 1) for o in yaml.safe_load((t / ".hydra" / "overrides.yaml").read_text()))
        for key, spec in space.items():  # every searched key got a value from its domain
            if bounds := _interval(str(spec)):
                assert bounds[0] <= float(chosen[key]) <= bounds[1], (key, chosen[key])
            else:
                assert float(chosen[key]) in {float(x) for x in str(spec)[len("choice("):-1].split(",")}, (key, chosen[key])
    # what each trial returned to Optuna is the package's main metric, and the best of them is reported
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(max(values))
    assert set(best["best_params"]) == set(space)


@pytest.mark.slow
def test_joblib_sweep_runs_parallel_jobs_into_the_store(tmp_path, mlflow_uri):
    from tests.reliability.harness import call

    sweep = tmp_path / "sweep"
    # the sweep's parent in this process (its jobs still run in joblib's worker processes); the sweep from a
    # fresh interpreter is tests/reliability's test_a_joblib_sweep_on_a_new_store_records_every_job
    res = call(
        "tests.common.toy.train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
        "module.lr=0.01,0.1", "trainer.max_epochs=1", "logger.mlflow.experiment_name=toy_joblib",
        f"hydra.sweep.dir={sweep}", f"paths.log_dir={tmp_path}", f"logger.mlflow.tracking_uri={mlflow_uri}",
        f"logger.mlflow.artifact_location={tmp_path}/art", "callbacks.progress_bar=null",
    )
    assert res.code == 0, res.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in res.stdout + res.stderr
    client = MlflowClient(tracking_uri=mlflow_uri)
    parent = (sweep / "mlflow_parent_run_id").read_text().strip()
    assert client.get_run(parent).info.status == "FINISHED"
    exp = client.get_experiment_by_name("toy_joblib")
    children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    got = {c.data.tags["job_num"]: (c.info.status, c.data.params["module.lr"], "test/loss" in c.data.metrics)
           for c in children}
    assert got == {"0": ("FINISHED", "0.01", True), "1": ("FINISHED", "0.1", True)}


@pytest.mark.parametrize("package", PACKAGES)
@pytest.mark.parametrize("trainer", ["fsdp", "deepspeed"])
def test_gpu_trainers_compose_and_validate(package, trainer):
    cfg = package_cfg(package, f"trainer={trainer}", "paths.output_dir=/tmp/x")
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.devices == 4 and cfg.trainer.precision == "bf16-mixed"
    with open_dict(cfg):
        del cfg["hydra"]
    validate(cfg)  # every key is a Trainer argument, types match
    if trainer == "fsdp":  # the strategy object builds without a GPU
        strategy = instantiate(cfg.trainer.strategy)
        assert type(strategy).__name__ == "FSDPStrategy"
        assert str(strategy.sharding_strategy).endswith("FULL_SHARD")
    else:
        assert cfg.trainer.strategy == "deepspeed_stage_2"


def test_slurm_launcher_composes(monkeypatch):
    monkeypatch.setenv("SLURM_PARTITION", "a100")
    cfg = package_cfg("vlm", "hydra/launcher=slurm", "+exp=lora", "model.lora.r=16")
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"] == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert launcher["partition"] == "a100" and launcher["account"] is None
    assert launcher["gpus_per_node"] == 1 and launcher["timeout_min"] == 240
