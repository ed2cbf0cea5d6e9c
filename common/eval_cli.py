"""The skeleton every evaluation command line shares: open the run's loggers (the MLflow run among them), run
the body, and end the MLflow run FINISHED, FAILED when the body raised (KILLED when a signal stopped it), in a ``finally`` (a failure must
never leave a run RUNNING in the store).

    with eval_cli.tracked_run(cfg) as loggers:
        ...log params / metrics / artifacts to ``loggers``...
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from omegaconf import DictConfig

from common import tracking
from common.run import instantiate_loggers
from common.signals import stop_signal


@contextmanager
def tracked_run(cfg: DictConfig, tags: dict[str, str] | None = None, log_config: bool = False) -> Iterator[list]:
    """The loggers of ``cfg.logger`` for the ``with`` body; on leaving it every MLflow run among them is marked
    FINISHED, or FAILED when the body raised (the exception propagates). ``tags`` are set on the MLflow
    run(s) first; ``log_config`` logs the resolved config to them."""
    loggers = instantiate_loggers(cfg, None)
    status = "FAILED"
    try:
        tracking.set_tags(loggers, tags or {})
        if log_config:
            for lg in loggers:
                if r := tracking.mlflow_run(lg):
                    tracking.log_config(r[0], r[1], cfg)
        yield loggers
        status = "FINISHED"
    except BaseException as e:
        if stop_signal(e):
            status = "KILLED"
        raise
    finally:
        tracking.end_runs(loggers, status)
