"""``ckpt=`` of ``python -m vlm.export`` -> the trained :class:`vlm.captioner.Captioner`.

The forms ``python -m vlm.eval`` takes (its resolver, :func:`vlm.eval.checkpoints`, which the command line hands
in): a ``.ckpt`` file, or a run dir (its best checkpoint, as the run's ``last.ckpt`` records it, else its
newest); and a captioner export dir
(``captioner.json``, what ``vlm.generate`` / ``vlm.serve`` load). A checkpoint holds only what trained: the rest
(the config, the base LLM, the embedded tower's pre-trained weights) comes from the run's ``captioner/`` export,
and the checkpoint's tensors replace those it holds.
"""

from __future__ import annotations

from pathlib import Path

import torch

from common.errors import ConfigError
from vlm.captioner import EXPORT_FILE, Captioner


def best_or_newest(found: list[tuple[Path, dict]]) -> Path:
    """Of a run's checkpoints (``vlm.eval.checkpoints``): the best one ``last.ckpt`` names, else the newest."""
    files = [f for f, _ in found]
    last = next((f.parent / "last.ckpt" for f in files if (f.parent / "last.ckpt").is_file()), None)
    if last is not None:
        state = torch.load(last, map_location="cpu", weights_only=True, mmap=True)
        for key, value in (state.get("callbacks") or {}).items():
            best = value.get("best_model_path") if key.startswith("ModelCheckpoint") else None
            if best and Path(best).is_file():
                return Path(best)
    return files[-1]


def _overlay(cap: Captioner, ckpt: Path) -> None:
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    own = dict(cap.vlm.named_parameters())
    mine = {k.removeprefix("vlm."): v for k, v in state.items()}
    unknown = [k for k in mine if k not in own]
    if unknown or not mine:
        raise ConfigError(f"ckpt: {ckpt} does not match its run's captioner (unknown tensors {unknown[:3]})")
    cap.vlm.load_state_dict(mine, strict=False)


def resolve(ckpt: str, checkpoints) -> tuple[Captioner, list[Path]]:
    """``(captioner on CPU, the input paths it was read from)``; one ConfigError line for a bad ``ckpt``.
    ``checkpoints(path) -> [(file, {epoch, global_step})]``: ``vlm.eval.checkpoints``."""
    path = Path(ckpt)
    if not path.exists():
        raise ConfigError(f"ckpt: no such file or directory {path}")
    if path.is_dir() and (path / EXPORT_FILE).is_file():
        return Captioner.load(path, device="cpu"), [path]
    found = checkpoints(path)
    chosen = found[0][0] if path.is_file() else best_or_newest(found)
    run = chosen.parent.parent
    export = run / "captioner"
    if not (export / EXPORT_FILE).is_file():
        raise ConfigError(f"ckpt: {run} has no captioner/{EXPORT_FILE} (a run writes it when it ends; "
                          "give a finished run's checkpoint)")
    cap = Captioner.load(export, device="cpu")
    _overlay(cap, chosen)
    return cap, [chosen, run, export]
