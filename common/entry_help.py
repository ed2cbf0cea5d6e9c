"""``--help`` of every entry point: its usage lines (the entry module's docstring), the config groups it
composes, its own (``conf/<package>/<group>``) apart from the shared ones (``conf/<group>``: trainer, logger,
callbacks, ...), each with its options. Hydra's generic help listed every group on the search path (another
entry point's ``annotate`` among them) and missed the shared groups; this is ``hydra.help.template``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

SKIP = ("hydra/", "schema/")  # Hydra's own groups and the registered dataclass schemas


def _conf() -> Path:
    import conf

    return Path(conf.__file__).resolve().parent


def _options(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def help_text(root: Any) -> str:
    main = sys.modules.get("__main__")
    doc = (getattr(main, "__doc__", None) or "").strip()
    spec = getattr(main, "__spec__", None)
    prog = f"python -m {spec.name}" if spec is not None and spec.name != "__main__" else Path(sys.argv[0]).name
    lines = [f"usage: {prog} [group=option ...] [key=value ...]   (-m: a sweep over comma-separated values)"]
    if doc:
        lines += ["", doc]
    package = str(root.get("package") or "")
    choices = dict(root.hydra.runtime.choices or {})
    own, shared = [], []
    for group, chosen in choices.items():
        if "@" in group or group.startswith(SKIP) or group in ("hydra",):
            continue
        if group == "run":
            shared.insert(0, "  run.name=NAME run.note=TEXT   (the MLflow run name and description; the name may interpolate keys, as sweeps need)")
            continue
        here = _conf() / package / group
        where = here if here.is_dir() else _conf() / group
        row = f"  {group}={'|'.join(_options(where)) or '...'}   (now: {chosen if chosen is not None else 'none'})"
        (own if here.is_dir() else shared).append(row)
    overlays = _options(_conf() / package / "exp")
    if overlays and "trainer" in choices:  # exp/ overlays change a training config
        own.insert(0, f"  +exp={'|'.join(overlays)}   (overlays: only what differs)")
    launchers = ["basic", "joblib", *_options(_conf() / "hydra" / "launcher")]
    lines += [*(["", f"== {package} groups ==", *own] if own else []), "", "== shared groups ==", *shared,
              f"  hydra/launcher={'|'.join(launchers)}   (sweeps: -m)", "",
              "Any key: key=value; a key the config lacks: +key=value. Print the composed config: --cfg job.",
              "Hydra's own flags: --hydra-help."]
    return "\n".join(lines).replace("$", "$$") + "\n"
