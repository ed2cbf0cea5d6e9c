"""Config resolvers and start-up validation.

Hydra already refuses unknown keys given on the command line (the primary config is in struct mode). What
it does not catch is a typo inside a YAML file (an ``exp/`` overlay adds the misspelt key silently) or a
value of the wrong type. :func:`validate` closes that gap before anything is built:

* nodes with a ``_target_`` are checked against the target's signature: every key must be a parameter
  (unless the target takes ``**kwargs``) and scalar values must fit simple annotations (int, float, bool,
  str, optionals of them);
* nodes that a package describes with a dataclass schema are merged into it, so unknown keys and wrong
  types fail with the key's full path.

Errors are :class:`~common.errors.ConfigError` whose message starts with the dotted key path.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import os
import types
import typing
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from common.errors import ConfigError

_HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}

# Keys that moved when the three packages took one name per concept: the old spelling fails at start-up
# naming the new one (each package used to say the learning rate and the data switch its own way).
RENAMED = {
    "module.lr": "optim.lr", "module.weight_decay": "optim.weight_decay",
    "model.lr": "optim.lr", "model.weight_decay": "optim.weight_decay",
    "model.warmup_steps": "scheduler.warmup_steps", "model.schedule": "scheduler=<name> (the scheduler group)",
    "optim.warmup_steps": "scheduler.warmup_steps", "optim.scheduler": "scheduler=<name> (the scheduler group)",
    "optim.lr_vision": "lr_groups.vision", "optim.lr_projector": "lr_groups.projector", "optim.lr_llm": "lr_groups.llm",
    "pretrain.lr": "optim.lr", "pretrain.weight_decay": "optim.weight_decay", "pretrain.warmup_ratio": "scheduler.warmup_ratio",
    "data.kind": "data.source",
}


def renamed(key: str) -> str | None:
    """``"<old>: renamed to <new>"`` when ``key`` (``+``/``~`` prefixes and ``=value`` allowed) is an old spelling."""
    key = key.lstrip("+~").split("=", 1)[0]
    return f"{key}: renamed to {RENAMED[key]}" if key in RENAMED else None


def renamed_in(message: str) -> str | None:
    """The renamed-key hint for a Hydra / OmegaConf error message that names an old spelling, else None."""
    import re

    for key in re.findall(r"override '([^']+)'|full_key: (\S+)|\b([a-z_]+\.[a-z_.]+)\b", message):
        hint = renamed(next(k for k in key if k))
        if hint:
            return hint
    return None


def project_root() -> Path:
    """The repository root: ``$PROJECT_ROOT``, else the checkout this package lives in, else the cwd."""
    if env := os.environ.get("PROJECT_ROOT"):
        return Path(env).resolve()
    here = Path(__file__).resolve().parent.parent
    if (here / "pyproject.toml").exists():
        return here
    return Path.cwd().resolve()


def dir_suffix(name: Any) -> str:
    """``"_lora_r16"`` for run name ``lora_r16``; ``""`` without one. Characters a folder name should not hold
    (path separators, spaces, shell metacharacters) become ``-``."""
    import re

    if name is None or str(name) == "":
        return ""
    return "_" + re.sub(r"[^\w.=+-]+", "-", str(name)).strip("-")[:100]


def register_resolvers() -> None:
    """Resolvers the YAML files use; safe to call more than once."""
    if not OmegaConf.has_resolver("project_root"):
        OmegaConf.register_new_resolver("project_root", lambda: str(project_root()))
    if not OmegaConf.has_resolver("direction"):
        # Lightning says min/max, Optuna says minimize/maximize.
        OmegaConf.register_new_resolver("direction", lambda mode: {"min": "minimize", "max": "maximize"}[mode])
    if not OmegaConf.has_resolver("dir_suffix"):
        # ``run.name`` as the end of a run dir's name: ``_<name>`` with path separators and spaces made safe.
        OmegaConf.register_new_resolver("dir_suffix", dir_suffix)
    if not OmegaConf.has_resolver("entry_help"):
        from common.entry_help import help_text

        OmegaConf.register_new_resolver("entry_help", lambda _root_: help_text(_root_))
    if not OmegaConf.has_resolver("eval"):
        # Only for small arithmetic in configs, e.g. ``alpha: ${eval:'2 * ${model.lora.r}'}``.
        OmegaConf.register_new_resolver("eval", lambda expr: eval(expr, {"__builtins__": {}}, {}))


register_resolvers()


def _suggest(key: str, options: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(options), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _import(target: str) -> Any:
    module, _, name = target.rpartition(".")
    try:
        obj = importlib.import_module(module)
        for part in name.split("."):
            obj = getattr(obj, part)
        return obj
    except (ImportError, AttributeError, ValueError):
        # Nested attribute paths such as ``pkg.Class.method``.
        parts = target.split(".")
        for i in range(len(parts) - 1, 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:i]))
            except ImportError:
                continue
            try:
                for part in parts[i:]:
                    obj = getattr(obj, part)
                return obj
            except AttributeError:
                break
    raise ConfigError(f"cannot import _target_ '{target}'")


def _accepts(annotation: Any, value: Any) -> bool:
    """Whether a scalar config value fits a simple annotation; unknown annotations accept anything."""
    if annotation is inspect.Parameter.empty or annotation is Any or value is None:
        return True
    if isinstance(annotation, str):  # postponed annotations we cannot evaluate safely
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(a, value) for a in typing.get_args(annotation))
    if origin is typing.Literal:
        return value in typing.get_args(annotation)
    if annotation is type(None):
        return False  # value is not None here
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    return True


def _check_target_node(node: DictConfig, path: str) -> None:
    target = node.get("_target_")
    obj = _import(str(target))
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return
    params = sig.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    try:
        hints = typing.get_type_hints(obj.__init__ if inspect.isclass(obj) else obj)
    except Exception:
        hints = {}
    for key in node.keys():
        key = str(key)
        if key in _HYDRA_KEYS:
            continue
        where = f"{path}.{key}" if path else key
        if key not in params:
            raise ConfigError(_not_a_parameter(where, target, params))
        value = node._get_node(key)
        if OmegaConf.is_config(value) or OmegaConf.is_missing(node, key):
            continue
        raw = node[key]
        annotation = hints.get(key, params[key].annotation)
        if not _accepts(annotation, raw):
            raise ConfigError(f"{where}: expected {_type_name(annotation)}, got {type(raw).__name__} {raw!r}")


def _not_a_parameter(where: str, target: Any, params: typing.Iterable[str]) -> str:
    return f"{where}: not a parameter of {target}{_suggest(where.rsplit('.', 1)[-1], params)}"


def unknown_key(cfg: DictConfig, key: str) -> str:
    """The message for dotted ``key`` that ``cfg`` lacks, said as :func:`validate` says it: ``trainer.max_epoch:
    not a parameter of lightning.pytorch.Trainer (did you mean 'max_epochs'?)`` under a ``_target_`` node, else
    ``data.sise: unknown key (did you mean 'size'?)`` naming the first part of the path that does not exist."""
    node: Any = cfg
    parts = key.lstrip("+~").split(".")
    for i, part in enumerate(parts):
        where = ".".join(parts[: i + 1])
        if not isinstance(node, DictConfig):
            return f"{where}: unknown key ({'.'.join(parts[:i])} is not a mapping)"
        if part not in node:
            if "_target_" in node:
                try:
                    params = inspect.signature(_import(str(node._target_))).parameters
                except (TypeError, ValueError, ConfigError):
                    params = {}
                return _not_a_parameter(where, node._target_, params)
            return f"{where}: unknown key{_suggest(part, [str(k) for k in node.keys()])}"
        node = node._get_node(part) if OmegaConf.is_missing(node, part) else node[part]
    return f"{key}: unknown key"


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        names = " or ".join(_type_name(a) for a in args if a is not type(None))
        return names + (" or null" if type(None) in args else "")
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _walk_targets(node: Any, path: str) -> None:
    if isinstance(node, DictConfig):
        if "_target_" in node:
            _check_target_node(node, path)
        for key in node.keys():
            if OmegaConf.is_missing(node, key):
                continue
            _walk_targets(node[key], f"{path}.{key}" if path else str(key))
    elif isinstance(node, ListConfig):
        for i, item in enumerate(node):
            _walk_targets(item, f"{path}[{i}]")


def _format_omegaconf_error(e: OmegaConfBaseException, prefix: str) -> str:
    key = getattr(e, "full_key", None) or ""
    key = f"{prefix}.{key}" if prefix and key else (prefix or key)
    if hint := renamed(key):
        return hint
    msg = str(e).split("\n")[0]
    if "not in" in msg.lower() and getattr(e, "key", None):
        owner = next((t for t in (getattr(e, "object_type", None), getattr(e, "ref_type", None)) if dataclasses.is_dataclass(t)), None)
        fields = [f.name for f in dataclasses.fields(owner)] if owner is not None else []
        return f"{key}: unknown key{_suggest(str(e.key), fields)}"
    return f"{key}: {msg}"


def validate(cfg: DictConfig, schemas: dict[str, type] | None = None) -> DictConfig:
    """Check ``cfg`` before anything is built; raise :class:`ConfigError` naming the key.

    ``schemas`` maps a dotted key (``"data"``, ``"model.lora"``) to a dataclass describing that node.
    Returns ``cfg`` with those nodes type-converted by their schema.
    """
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as e:
        raise ConfigError(_format_omegaconf_error(e, "")) from None
    for key, schema in (schemas or {}).items():
        node = OmegaConf.select(cfg, key)
        if node is None:
            raise ConfigError(f"{key}: missing (expected a {schema.__name__} node)")
        try:  # a plain copy (interpolations kept): a node already typed by the schema would skip the key check
            merged = OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.to_container(node, resolve=False))
        except OmegaConfBaseException as e:
            raise ConfigError(_format_omegaconf_error(e, key)) from None
        with _writable(cfg):
            OmegaConf.update(cfg, key, merged, merge=False)
    _walk_targets(cfg, "")
    return cfg


class _writable:
    def __init__(self, cfg: DictConfig):
        self.cfg = cfg

    def __enter__(self):
        self.struct = OmegaConf.is_struct(self.cfg)
        self.readonly = OmegaConf.is_readonly(self.cfg)
        OmegaConf.set_struct(self.cfg, False)
        OmegaConf.set_readonly(self.cfg, False)

    def __exit__(self, *exc):
        OmegaConf.set_struct(self.cfg, self.struct)
        OmegaConf.set_readonly(self.cfg, self.readonly)
