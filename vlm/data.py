"""Brand-caption data: validated records, the synthetic set, datasets and the LightningDataModule.

Record formats (JSONL, one object a line, or a LLaVA ``.json`` array of the same objects; ``image`` relative to
``data.image_root`` or the file's folder):
* ``{id, image, brand|null, caption, kind?, prompt?, bbox?, desc?}``
* LLaVA style ``{id, image, brand?, conversations: [{from: human, value: "<image>\\n..."}, {from: gpt, value}]}``

Readers that do not need a caption (``need_caption=False``: evaluation, generation) take records without
one; training needs it (``file:line: record needs 'caption' or 'conversations'``).
``kind`` is ``logo`` / ``none`` / ``none_brand`` (default: ``none`` when brand is null, else ``logo``).
Every record is checked on reading (image present, its header sound and its size under
``data.max_image_pixels``, an assistant turn, caption survives cleaning) and a bad one fails as
``file:line: reason`` (or is skipped with ``data.on_bad_record=skip``) before training starts. Pixels are
decoded only in ``CaptionDataset.__getitem__`` (in the DataLoader workers, ``data.num_workers``): a record
keeps its path, header size and token ids, so the data set's memory does not grow with decoded images.
With ``data.tiles.max_num > 1`` an image becomes InternVL's tiles (``vlm.images``) and its ``<image>``
placeholder ``tiles x image tokens`` positions.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from common.data.fingerprint import fingerprint
from common.data.records import read_json_records, require_text
from common.data.splits import stratified_split
from common.errors import ConfigError, DataError
from common.metrics.brand import BrandMatcher, load_aliases
from vlm import synth
from vlm.caption_clean import clean_with
from vlm.chat import IGNORE, IMAGE_TOKEN, encode, prompt_ids
from vlm.images import cropped_size, header, load_tiles, num_tiles

log = logging.getLogger(__name__)

KINDS = ("logo", "none", "none_brand")
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


@dataclass
class Record:
    id: str
    image: str
    brand: str | None
    kind: str
    messages: list[dict]
    bbox: list[float] | None = None
    desc: str | None = None
    size: tuple[int, int] | None = field(default=None, repr=False)  # (width, height) from the header

    @property
    def caption(self) -> str | None:
        """The last assistant turn; None for a record read without one (``need_caption=False``)."""
        return next((m["content"] for m in reversed(self.messages) if m["role"] == "assistant"), None)

    @property
    def prompt_messages(self) -> list[dict]:
        """The conversation up to (not including) its first assistant turn."""
        i = next((i for i, m in enumerate(self.messages) if m["role"] == "assistant"), len(self.messages))
        return self.messages[:i]


def prepare_image(path: str | Path, size: int, bbox=None, crop: bool = False, margin: float = 0.1) -> np.ndarray:
    """``uint8 [3, size, size]``; with ``crop`` the product box (plus margin) or else the central 80%."""
    return load_tiles(path, size, 1, 1, bbox, crop, margin)[0]


def _messages(raw: dict, prompt: str, clean, need_caption: bool = True) -> list[dict]:
    if "conversations" in raw:
        conv = raw["conversations"]
        if not isinstance(conv, list) or not conv:
            raise ValueError("field 'conversations' must be a non-empty list")
        msgs = []
        for turn in conv:
            if not isinstance(turn, dict):
                raise ValueError("each conversation turn must be an object")
            role = ROLES.get(str(turn.get("from", turn.get("role", ""))).lower())
            if role is None:
                raise ValueError(f"unknown conversation role {turn.get('from', turn.get('role'))!r}")
            msgs.append({"role": role, "content": require_text(turn.get("value", turn.get("content")), "value")})
        if need_caption and not any(m["role"] == "assistant" for m in msgs):
            raise ValueError("conversation has no assistant (gpt) turn")
    elif "caption" in raw and (need_caption or raw["caption"] is not None):
        msgs = [{"role": "user", "content": require_text(raw.get("prompt") or prompt, "prompt")},
                {"role": "assistant", "content": require_text(raw["caption"], "caption")}]
    elif not need_caption:
        msgs = [{"role": "user", "content": require_text(raw.get("prompt") or prompt, "prompt")}]
    else:
        raise ValueError("record needs 'caption' or 'conversations'")  # training does; the other readers pass need_caption=False
    first_user = next((m for m in msgs if m["role"] == "user"), None)
    if first_user is None:
        raise ValueError("conversation has no user turn")
    if IMAGE_TOKEN not in first_user["content"]:
        first_user["content"] = f"{IMAGE_TOKEN}\n{first_user['content']}"
    for m in msgs:
        if m["role"] == "assistant":
            cleaned = clean(m["content"])
            if cleaned is None:
                raise ValueError("caption dropped by cleaning (looping, garbled or too short)")
            m["content"] = cleaned
    return msgs


def read_records(path: str | Path, image_root: str | Path | None, cfg, image_size: int | None = None,
                 need_caption: bool = True) -> list[Record]:
    """Validated records (JSONL or a LLaVA JSON array); images are header-checked here, not decoded
    (``image_size`` is not needed). ``need_caption=False`` accepts records without a caption."""
    path = Path(path)
    root = Path(image_root) if image_root else path.parent
    clean = clean_with(cfg.clean)

    def validate(raw: dict) -> Record:
        rid = str(raw["id"]) if "id" in raw else None
        if rid is None:
            raise ValueError("missing field 'id'")
        image = require_text(raw.get("image"), "image")
        brand = raw.get("brand")
        if brand is not None:
            brand = require_text(brand, "brand")
        kind = raw.get("kind") or ("none" if brand is None else "logo")
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r} (logo, none, none_brand)")
        if (kind == "none") != (brand is None):
            raise ValueError(f"kind {kind!r} with brand {brand!r}: 'none' has no brand, the others need one")
        msgs = _messages(raw, cfg.prompt, clean, need_caption)
        img_path = Path(image) if Path(image).is_absolute() else root / image
        bbox = raw.get("bbox")
        size = header(img_path, int(cfg.max_image_pixels))
        desc = raw.get("desc")
        return Record(rid, str(img_path), brand, kind, msgs, bbox, desc if isinstance(desc, str) else None, size)

    return read_json_records(path, validate, on_bad_record=cfg.on_bad_record, unique="id")


def facts(rec: Record) -> str:
    if rec.kind == "logo":
        return f"Facts: {rec.brand} logo."
    if rec.kind == "none_brand":
        return f"Facts: {rec.brand} colours, no logo."
    return "Facts: no brand."


def expand_image(ids: np.ndarray, labels: np.ndarray | None, image_id: int, n: int):
    """The one ``<image>`` id of an encoded sample -> ``n`` of them (labels -100 there). Tokenizing the text
    with the placeholder already repeated gives the same ids: ``<image>`` is a special token."""
    (pos,) = np.flatnonzero(ids == image_id)[:1]
    out = np.concatenate([ids[:pos], np.full(n, image_id, dtype=ids.dtype), ids[pos + 1:]])
    if labels is None:
        return out, None
    return out, np.concatenate([labels[:pos], np.full(n, IGNORE, dtype=labels.dtype), labels[pos + 1:]])


class CaptionDataset(Dataset):
    """Encoded samples (token ids with one ``<image>`` position, int32); pixels are decoded per item.

    ``tiles``: ``data.tiles`` (max_num, min_num); ``image_size``: the tower's tile size; ``n_image_tokens``:
    the tower's tokens per tile. An item's ``<image>`` expands to ``tiles x n_image_tokens`` positions."""

    def __init__(self, records: list[Record], tokenizer, n_image_tokens: int, extra_desc: bool = False,
                 image_size: int = 64, tiles=None, crop: bool = False, crop_margin: float = 0.1):
        self.image_size, self.n_image_tokens = int(image_size), int(n_image_tokens)
        self.max_num = int(tiles.max_num) if tiles is not None else 1
        self.min_num = int(tiles.min_num) if tiles is not None else 1
        self.crop, self.crop_margin = bool(crop), float(crop_margin)
        self.image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        self.items = []
        for rec in records:
            convs = [rec.messages]
            if extra_desc and rec.desc:
                convs.append([{"role": "user", "content": f"{IMAGE_TOKEN}\n{synth.DESC_PROMPT}"},
                              {"role": "assistant", "content": rec.desc}])
            n_tiles = self.tiles_of(rec)
            for msgs in convs:
                try:
                    prompt = prompt_ids(tokenizer, rec.prompt_messages, 1)
                    if rec.caption is None:  # read for evaluation without a caption: captioned, nothing to score the loss on
                        ids, labels = list(prompt), [IGNORE] * len(prompt)
                    else:
                        enc = encode(tokenizer, msgs, 1)
                        ids, labels = enc.input_ids, enc.labels
                except DataError as e:
                    raise DataError(f"record {rec.id}: {e}") from None
                self.items.append((rec, np.asarray(ids, np.int32), np.asarray(labels, np.int32),
                                   np.asarray(prompt, np.int32), n_tiles))

    def tiles_of(self, rec: Record) -> int:
        if self.max_num <= 1 or rec.size is None:
            return 1
        size = cropped_size(rec.size, rec.bbox, self.crop, self.crop_margin)
        return num_tiles(size, self.image_size, self.max_num, self.min_num)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        rec, ids, labels, prompt, n_tiles = self.items[i]
        tiles = load_tiles(rec.image, self.image_size, self.max_num, self.min_num, rec.bbox, self.crop, self.crop_margin)
        if len(tiles) != n_tiles:
            raise DataError(f"{rec.image}: {len(tiles)} tiles decoded, {n_tiles} expected from its header size")
        n = n_tiles * self.n_image_tokens
        ids, labels = expand_image(ids, labels, self.image_id, n)
        prompt, _ = expand_image(prompt, None, self.image_id, n)
        return {"pixels": torch.from_numpy(tiles).float() / 255.0, "input_ids": ids.tolist(), "labels": labels.tolist(),
                "prompt": prompt.tolist(), "id": rec.id, "brand": rec.brand, "kind": rec.kind, "caption": rec.caption}


def collate(pad_id: int):
    def fn(batch: list[dict]) -> dict:
        n = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), n), pad_id, dtype=torch.long)
        labels = torch.full((len(batch), n), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(batch), n), dtype=torch.long)
        for i, b in enumerate(batch):
            k = len(b["input_ids"])
            ids[i, :k] = torch.tensor(b["input_ids"])
            labels[i, :k] = torch.tensor(b["labels"])
            mask[i, :k] = 1
        return {
            "pixels": torch.cat([b["pixels"] for b in batch]),  # [sum of tiles, 3, S, S], sample by sample
            "n_tiles": [len(b["pixels"]) for b in batch],
            "input_ids": ids, "labels": labels, "attention_mask": mask,
            "prompts": [b["prompt"] for b in batch],
            "meta": [{k: b[k] for k in ("id", "brand", "kind", "caption")} for b in batch],
        }

    return fn


class BrandCaptionData(pl.LightningDataModule):
    """Reads (or renders) the records at construction; ``attach(tokenizer, n_image_tokens)`` encodes them."""

    def __init__(self, cfg, image_size: int, cache_dir: str | Path, seed: int = 0):
        super().__init__()
        self.cfg = cfg
        self.seed = seed
        self.image_size = image_size
        if cfg.source == "synthetic":
            sc = synth.SynthConfig(**dict(cfg.synthetic))
            root = synth.ensure(sc, cache_dir)
            files = {s: root / f"{s}.jsonl" for s in ("train", "val", "test")}
            image_root = root
        elif cfg.source == "jsonl":
            if not cfg.train_file and not cfg.test_file:
                raise ConfigError("data.train_file: required when data.source=jsonl")
            files = {"train": cfg.train_file, "val": cfg.val_file, "test": cfg.test_file}
            image_root = cfg.image_root
        else:
            raise ConfigError(f"data.source: must be 'synthetic' or 'jsonl', got {cfg.source!r}")
        self.aliases = load_aliases(cfg.brand_aliases) if cfg.brand_aliases else {}
        self.records: dict[str, list[Record]] = {}
        for split, f in files.items():
            if f:  # val / test records may lack a caption: their recalls need only the brand (no loss then)
                self.records[split] = read_records(f, image_root, cfg, need_caption=split == "train")
        if "train" in self.records and "val" not in self.records:
            recs = self.records["train"]
            try:
                tr, va = stratified_split([r.brand or "none" for r in recs], [1 - cfg.val_fraction, cfg.val_fraction], seed)
            except ConfigError:  # the split helper names data.split; here the fraction is val_fraction
                raise ConfigError(f"data.val_fraction: {len(recs)} training records are too few to hold out "
                                  f"{cfg.val_fraction} for validation; give data.val_file") from None
            self.records["train"], self.records["val"] = [recs[i] for i in tr], [recs[i] for i in va]
        self._filter_brands()
        brands = sorted({r.brand for rs in self.records.values() for r in rs if r.brand})
        try:
            self.matcher = BrandMatcher(brands, self.aliases)
        except DataError as e:
            raise DataError(f"{cfg.brand_aliases}: {e}") from None
        self.brands = brands
        self.fingerprint = fingerprint(
            [(s, r.id, r.brand, r.kind, r.caption) for s, rs in sorted(self.records.items()) for r in rs]
        )
        self.tokenizer = None

    def _filter_brands(self) -> None:
        n = self.cfg.min_brand_samples
        if n <= 1 or "train" not in self.records:
            return
        counts = Counter(r.brand for r in self.records["train"] if r.brand)
        keep = {b for b, c in counts.items() if c >= n}
        dropped = sorted(set(counts) - keep)
        if dropped:
            log.info("brand filter (>= %d train samples) drops %s", n, ", ".join(dropped))
        for split, recs in self.records.items():
            self.records[split] = [r for r in recs if r.brand is None or r.brand in keep]

    def corpus(self) -> tuple[list[str], list[dict]]:
        """Texts for the tokenizer and pre-training rows for the embedded tiny LLM (train split only)."""
        recs = self.records.get("train", [])
        rows, texts = [], []
        for r in recs:
            user = next(m["content"] for m in r.prompt_messages if m["role"] == "user").replace(IMAGE_TOKEN, "").strip()
            rows.append({"prompt": user, "caption": r.caption, "facts": facts(r)})
            texts += [user, r.caption, facts(r)]
            if r.desc:
                rows.append({"prompt": synth.DESC_PROMPT, "caption": r.desc, "facts": facts(r)})
                texts.append(r.desc)
        return sorted(set(synth.caption_corpus() + texts)), rows

    def pixels(self, split: str) -> np.ndarray:
        """``uint8 [N, 3, S, S]``: every image of ``split`` decoded (one tile each) -- for the small embedded
        set's tower pre-training only; training and evaluation decode per item."""
        return np.stack([prepare_image(r.image, self.image_size, r.bbox, self.cfg.crop, self.cfg.crop_margin)
                         for r in self.records[split]])

    def _dataset(self, recs: list[Record], extra_desc: bool = False) -> CaptionDataset:
        return CaptionDataset(recs, self.tokenizer, self.n_image_tokens, extra_desc=extra_desc,
                              image_size=self.image_size, tiles=self.cfg.tiles, crop=self.cfg.crop,
                              crop_margin=self.cfg.crop_margin)

    def attach(self, tokenizer, n_image_tokens: int) -> None:
        """Encode the records for ``tokenizer``; ``n_image_tokens``: the vision tower's tokens per tile."""
        self.tokenizer, self.n_image_tokens = tokenizer, int(n_image_tokens)
        self.datasets = {}
        for split, recs in self.records.items():
            self.datasets[split] = self._dataset(recs, extra_desc=self.cfg.with_desc and split == "train")
        if "train" in self.records:
            rng = np.random.default_rng(self.seed)
            train = self.records["train"]
            k = min(self.cfg.train_eval_size, len(train))
            pick = sorted(rng.choice(len(train), size=k, replace=False).tolist())
            self.datasets["train_eval"] = self._dataset([train[i] for i in pick])

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if self.tokenizer is None:
            raise RuntimeError("BrandCaptionData.attach(tokenizer, n_image_tokens) was not called")
        bs = self.cfg.batch_size if shuffle else self.cfg.eval_batch_size
        g = torch.Generator().manual_seed(self.seed)
        return DataLoader(self.datasets[split], batch_size=bs, shuffle=shuffle, generator=g,
                          num_workers=self.cfg.num_workers, collate_fn=collate(self.tokenizer.pad_token_id))

    def train_dataloader(self):
        return self._loader("train", True)

    def val_dataloader(self):
        return [self._loader("val", False), self._loader("train_eval", False)]

    def test_dataloader(self):
        loaders = [self._loader("test", False)] if "test" in self.datasets else []
        if "train_eval" in self.datasets:
            loaders.append(self._loader("train_eval", False))
        return loaders

    def eval_split_names(self, stage: str) -> list[str]:
        if stage == "val":
            return ["val", "train"]
        return (["test"] if "test" in self.datasets else []) + (["train"] if "train_eval" in self.datasets else [])
