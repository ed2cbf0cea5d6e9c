"""The decorator every Hydra entry point uses (``vlm/train.py`` and friends stay a few lines long).

It points Hydra at the package's config dir (``conf/<package>/``, shipped as ``pkg://conf.<package>``; the
shared groups in ``conf/`` come in through the primary config's ``hydra.searchpath``) and decides how
errors end a job:

* a :class:`~common.errors.UserError` (bad data, bad config), a ``???`` value left unset, and Hydra's own
  composition errors (a key that is not in the config, an unknown group option such as ``+exp=nope``) print
  one line ``error: …`` and exit 2;
* inside a multirun every failing job is recorded in ``<sweep_dir>/failed_jobs/`` and the sweep goes on;
  :class:`common.tracking.SweepCallback` reports the failures and exits non-zero at the end;
* a SIGTERM or Ctrl-C (:mod:`common.signals`) prints ``error: stopped by SIGTERM; ...`` and exits 143 / 130,
  the MLflow run(s) marked KILLED, in a sweep too (the sweep stops);
* any other exception is a bug: its traceback goes to the run log and one ``error: unexpected ...`` line
  naming that log to the terminal, exit 1.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

import common.config  # noqa: F401  (registers the resolvers the YAML files use)
from common import tracking
from common.config import renamed_in
from common.errors import ConfigError, UserError
from common.signals import stop_signal, stopping
from common.tracking import FAILURES_DIR

log = logging.getLogger(__name__)


def _is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _record_failure(error: BaseException) -> None:
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    out = Path(hc.sweep.dir) / FAILURES_DIR
    out.mkdir(parents=True, exist_ok=True)
    head = f"job {hc.job.num} ({' '.join(hc.overrides.task)}): {type(error).__name__}: {error}"
    tb = "".join(traceback.format_exception(error))
    (out / f"{hc.job.num}.txt").write_text(head.replace("\n", " ") + "\n\n" + tb, encoding="utf-8")


def one_line(error: BaseException) -> str:
    """Hydra's multi-line composition / override messages (and their OmegaConf cause) as one line."""
    parts: list[str] = []
    for cause in (error, error.__cause__ if isinstance(error.__cause__, OmegaConfBaseException) else None):
        for raw in str(cause or "").splitlines():
            line = raw.strip().rstrip(".")
            if line.startswith("Config search path"):
                break
            if not line or line.startswith(("full_key:", "object_type=", "reference_type=")) or line in parts:
                continue
            if raw.startswith("\t") and parts:  # the options listed under "Available options in 'exp':"
                parts[-1] += ("" if parts[-1].endswith(":") else ",") + f" {line}"
            else:
                parts.append(line)
    return "; ".join(parts)


def _drop_empty_run_dir() -> None:
    """A job that failed before it made anything (a config that fails validation, a data file that does not
    read) leaves no run dir behind: remove it when it holds only Hydra's ``.hydra/`` and the job's log."""
    import shutil

    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    out = Path(HydraConfig.get().runtime.output_dir)
    if out.is_dir() and all(p.name == ".hydra" or p.suffix == ".log" for p in out.iterdir()):
        shutil.rmtree(out, ignore_errors=True)
        for parent in (out.parent, out.parent.parent):  # runs/ and <task>/ when this was their only run
            try:
                parent.rmdir()
            except OSError:
                break


def _log_files() -> list[logging.FileHandler]:
    return [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]


def _unexpected(error: Exception) -> None:
    """A bug, not the user's input: the traceback goes to the run log, one line to the terminal, exit 1
    (with no run log to hold it, the traceback is printed as Python would)."""
    files = _log_files()
    if not files:
        raise error
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, "unexpected error", None,
                            (type(error), error, error.__traceback__))
    for h in files:
        h.handle(record)
    first = (str(error).strip().splitlines() or [""])[0][:300]
    where = ", ".join(h.baseFilename for h in files)
    print(f"error: unexpected {type(error).__name__}: {first} (a bug, not your input; traceback in {where})",
          file=sys.stderr)
    sys.exit(1)


def _stopped(sig: signal.Signals, cfg: Any) -> None:
    """A signal-initiated stop: one line, exit ``128 + signal`` (what a shell reports), and in a sweep the
    parent MLflow run ends KILLED too; the sweep stops (the remaining jobs were not asked for any more)."""
    log.warning("stopped by %s", sig.name)
    if _is_multirun():
        from hydra.core.hydra_config import HydraConfig

        tracking.end_sweep_parent(Path(HydraConfig.get().sweep.dir), cfg, "KILLED")
    print(f"error: stopped by {sig.name}; the MLflow run is marked KILLED (a training resumes with ckpt_path=last)",
          file=sys.stderr)
    sys.exit(128 + int(sig))


def run_job(task: Callable[[Any], Any], cfg: Any) -> Any:
    with stopping():
        try:
            return task(cfg)
        except BaseException as e:
            if sig := stop_signal(e):
                _stopped(sig, cfg)
            if not isinstance(e, Exception):  # sys.exit(n) of the task's own, GeneratorExit: as they are
                raise
            if _is_multirun():
                _record_failure(e)
                log.error("job failed, sweep continues: %s: %s", type(e).__name__, e)
                return math.nan  # Optuna marks the trial failed; the basic/joblib launchers move on
            if isinstance(e, MissingMandatoryValue):  # a ``???`` the command line did not fill
                e = ConfigError(f"{e.full_key}: missing mandatory value; give it on the command line ({e.full_key}=...)")
            if isinstance(e, UserError):
                _drop_empty_run_dir()
                print(f"error: {e}", file=sys.stderr)
                sys.exit(2)
            _unexpected(e)


def _key_first(message: str) -> str:
    """``Error merging override data.max_len=long; Value ...`` (a schema-typed node refusing a value while Hydra
    composes) -> ``data.max_len: Value ...``, the ``key: what is wrong`` shape of every other error."""
    import re

    m = re.match(r"Error merging override \+*([\w.]+)=[^;]*; (.*)", message)
    if m:
        return f"{m.group(1)}: {m.group(2)}"
    # Hydra's override grammar takes no unquoted non-ASCII value (a Chinese label): say how to write it
    m = re.match(r"LexerNoViableAltException: \+*([\w.]+)=(.*?); \^", message)
    if m and not m.group(2).isascii():
        return (f"{m.group(1)}: Hydra's override grammar needs a value like {m.group(2)!r} quoted: "
                f"\"{m.group(1)}='{m.group(2)}'\" (single quotes inside the shell's double quotes)")
    return message


def _unknown_override(error: BaseException, source: str, config_name: str) -> str | None:
    """``trainer.max_epoch=3`` (no ``+``): Hydra says "Could not override ... To append use +trainer.max_epoch=3",
    advice that only leads to the did-you-mean one step later. Compose the config without that override and
    name the key the way start-up validation does (``common.config.unknown_key``). None when it is not that error
    or the config does not compose without it."""
    import re

    m = re.match(r"Could not override '([^']+)'", str(error))
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    if not m or not isinstance(error.__cause__, ConfigKeyError | ConfigAttributeError):  # a key the config lacks, not a bad value
        return None
    key = m.group(1)
    try:
        from hydra import compose, initialize_config_dir, initialize_config_module
        from hydra._internal.utils import get_args_parser
        from hydra.core.global_hydra import GlobalHydra
        from hydra.core.override_parser.overrides_parser import OverridesParser

        args = get_args_parser().parse_known_args(sys.argv[1:])[0]
        parsed = OverridesParser.create().parse_overrides(list(args.overrides or []))
        rest = [o.input_line for o in parsed
                if o.key_or_group != key and not o.is_sweep_override() and not o.key_or_group.startswith("hydra")]
        GlobalHydra.instance().clear()
        init = (initialize_config_module(source.removeprefix("pkg://"), version_base="1.3") if source.startswith("pkg://")
                else initialize_config_dir(str(Path(source).resolve()), version_base="1.3"))
        with init:
            cfg = compose(args.config_name or config_name, overrides=rest)
    except Exception:  # the plain message is still right, just less helpful
        return None
    return common.config.unknown_key(cfg, key)


def _reporting_errors(hydra_main: Callable[[], Any], source: str, config_name: str) -> Callable[[], Any]:
    """Hydra prints a bad override or a missing config group option over several lines and exits 1; say it
    in one ``error:`` line with exit 2 like every other user error (``HYDRA_FULL_ERROR=1`` keeps Hydra's)."""

    @functools.wraps(hydra_main)
    def cli(*args: Any, **kwargs: Any) -> Any:
        from hydra.errors import CompactHydraException

        if os.environ.get("HYDRA_FULL_ERROR"):
            return hydra_main(*args, **kwargs)
        os.environ["HYDRA_FULL_ERROR"] = "1"  # let the exception reach us instead of being printed
        try:
            return hydra_main(*args, **kwargs)
        except CompactHydraException as e:
            print(f"error: {renamed_in(str(e)) or _unknown_override(e, source, config_name) or _key_first(one_line(e))}",
                  file=sys.stderr)
            sys.exit(2)
        except OSError as e:  # the job's own are handled in run_job: this is Hydra making the run dir or its log
            print(f"error: paths.log_dir: cannot create the run directory {e.filename}: {e.strerror} "
                  "(set paths.log_dir or hydra.run.dir to a writable place)", file=sys.stderr)
            sys.exit(2)
        finally:
            os.environ.pop("HYDRA_FULL_ERROR", None)

    return cli


def main(package: str, config_name: str = "train", config_path: str | None = None) -> Callable:
    """``@main("vlm")`` turns ``def train(cfg) -> float | None`` into the package's Hydra CLI.

    ``config_path`` defaults to ``pkg://conf.<package>``; tests and plug-ins may point elsewhere.
    """

    def deco(task: Callable[[Any], Any]) -> Callable[[], Any]:
        import hydra

        @functools.wraps(task)
        def job(cfg: Any) -> Any:
            return run_job(task, cfg)

        source = config_path or f"pkg://conf.{package}"
        hydra_main = hydra.main(version_base="1.3", config_path=source, config_name=config_name)(job)
        return _reporting_errors(hydra_main, source, config_name)

    return deco
