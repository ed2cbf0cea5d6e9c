"""Loading a saved LightningModule for evaluation or prediction, as data only (``weights_only=True``).

A missing file or one that is not a checkpoint of the expected module is the user's to fix: it fails as one
line naming the config key, never as a torch / pickle traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from common.errors import ConfigError

M = TypeVar("M")


def load_module(cls: type[M], path: str | Path, key: str = "ckpt") -> M:
    """``cls`` restored from the Lightning checkpoint at ``path`` on the CPU, in eval mode."""
    path = Path(str(path))
    if not path.is_file():
        raise ConfigError(f"{key}: no checkpoint file at {path}")
    try:
        module = cls.load_from_checkpoint(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # garbage, a truncated file, another package's checkpoint: all the file's fault
        reason = (str(e).strip().splitlines() or [""])[0].split(". ")[0][:100]
        raise ConfigError(f"{key}: {path} is not a readable {cls.__name__} checkpoint ({type(e).__name__}: {reason})") from None
    module.eval()
    return module
