"""Loading a saved LightningModule for evaluation or prediction, as data only (``weights_only=True``).

A missing file or one that is not a checkpoint of the expected module is the user's to fix: it fails as one
line naming the config key, never as a torch / pickle traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

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
        raise ConfigError(f"{key}: {path} is not a readable {cls.__name__} checkpoint ({type(e).__name__}: {_reason(e)})") from None
    module.eval()
    return module


def _reason(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0].split(". ")[0][:100]


def check_resumable(path: str | Path, module: Any, key: str = "ckpt_path") -> None:
    """Refuse, before a trainer starts, a ``ckpt_path`` that is not a Lightning checkpoint of ``module``: not
    readable as data (a text file: torch's own message would advise the unsafe ``weights_only=False``),
    another model's (other weight names) or another label space / size (same names, other shapes)."""
    import torch

    path = Path(str(path))
    try:
        import zipfile

        # a zip archive (what torch.save writes) is mapped, not read: checking a 3B model's file costs nothing
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as e:
        raise ConfigError(f"{key}: {path} is not a readable Lightning checkpoint ({type(e).__name__}: {_reason(e)})") from None
    saved = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    if not isinstance(saved, dict):
        raise ConfigError(f"{key}: {path} is not a Lightning checkpoint (no state_dict)")
    own = module.state_dict()
    missing, unexpected = sorted(set(own) - set(saved)), sorted(set(saved) - set(own))
    if not getattr(module, "strict_loading", True):  # it saves only what trained (vlm) and checks that itself
        missing = []
    if missing or unexpected:
        raise ConfigError(
            f"{key}: {path} is a checkpoint of another model, not {type(module).__name__}: {len(missing)} of its "
            f"{len(own)} weights missing (e.g. {missing[:1] or '-'}), {len(unexpected)} unknown (e.g. {unexpected[:1] or '-'})"
        )
    for name, tensor in own.items():
        if name in saved and tuple(saved[name].shape) != tuple(tensor.shape):
            raise ConfigError(
                f"{key}: {path} has {name} of shape {list(saved[name].shape)}, this config builds {list(tensor.shape)} "
                "(another label space or model size); resume with the config it was trained with"
            )
