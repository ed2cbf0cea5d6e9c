"""A trained matcher at work: load it from a checkpoint and embed catalog items with it, through the
embedding cache (shared by the eval, match, index, mine and bench command lines)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from common.cache import build_once, content_hash
from common.checkpoints import load_module as load
from common.errors import ConfigError
from retrieval.data import ItemDataset, ItemLoader, collate_items
from retrieval.module import RetrievalModule

log = logging.getLogger(__name__)


def load_module(ckpt: str | Path) -> RetrievalModule:
    """A :class:`~retrieval.module.RetrievalModule` from a Lightning checkpoint (``weights_only=True``)."""
    return load(RetrievalModule, ckpt)


def transforms_of(module):
    img = module.net.image
    return img.transforms() if img is not None else None


TOWERS = ("fused", "text", "image")


def tower_dim(module, tower: str | None) -> int:
    net = module.net
    return net.dim if tower in (None, "fused") else getattr(net, tower).dim


@torch.no_grad()
def embed_catalog(module, cat, indices, batch_size: int = 128, tower: str | None = None) -> dict[int, np.ndarray]:
    """``{catalog index: embedding}`` for ``indices`` with the module's towers (progress bar); ``tower``
    ``text`` / ``image`` embeds with that tower alone (null / ``fused``: the model's embedding)."""
    if tower not in (None, *TOWERS):
        raise ConfigError(f"tower: expected one of {', '.join(TOWERS)}, got {tower!r}")
    if tower in ("text", "image") and getattr(module.net, tower) is None:
        raise ConfigError(f"{tower}: the model has no {tower} tower")
    tf = transforms_of(module) if tower != "text" else None
    text_only = tower == "text" or (tower is None and tf is not None and not cat.has_images)
    if text_only and tower is None:
        if module.net.text is None:
            raise ConfigError("ckpt: the model has only an image tower but this data set has no images")
        log.warning("the data has no images: embedding with the text tower alone")
    if text_only:
        tf = None
    loader = DataLoader(ItemDataset(indices, ItemLoader(cat, tf[1] if tf else None)), batch_size=batch_size,
                        collate_fn=collate_items)
    out = {}
    for batch in tqdm(loader, desc="embedding", leave=False):
        if text_only:
            e = module.net.text(batch["title"])
        elif tower == "image":
            e = module.net.image(batch["image"])
        else:
            e = module.net(batch)
        for i, v in zip(batch["idx"].tolist(), e.float().numpy(), strict=True):
            out[i] = v
    return out


def cache_key(*parts) -> str:
    """The embedding cache's key of ``parts`` (joined by ``|``; 16 hex digits)."""
    return content_hash("|".join(str(p) for p in parts), 16)


def cached_embeddings(cache_dir: str | Path, key: str, compute) -> np.ndarray:
    """``compute()`` once per key; the array is kept as ``<cache_dir>/<key>.npy`` (built once, renamed into place)."""
    path = Path(cache_dir) / f"{key}.npy"

    def write(tmp: Path) -> None:
        with tmp.open("wb") as f:
            np.save(f, np.asarray(compute(), dtype=np.float32))

    return np.load(build_once(path, write, "embeddings"))


def cached_embed(module, ckpt: str | Path, cat, indices, cache_dir: str | Path, fingerprint: str) -> dict[int, np.ndarray]:
    """:func:`embed_catalog` through the embedding cache (key: checkpoint path + mtime, data fingerprint)."""
    indices = np.asarray(sorted(int(i) for i in indices))
    st = Path(str(ckpt)).stat()
    key = cache_key(Path(str(ckpt)).resolve(), st.st_mtime_ns, fingerprint, indices.tobytes().hex()[:64], len(indices))

    def compute():
        e = embed_catalog(module, cat, indices)
        return np.stack([e[int(i)] for i in indices])

    arr = cached_embeddings(Path(cache_dir) / "retrieval" / "emb", key, compute)
    return {int(i): v for i, v in zip(indices, arr, strict=True)}
