"""Brand-caption data: validated records, the synthetic set, datasets and the LightningDataModule.

Record formats (JSONL, one object a line; ``image`` relative to ``data.image_root`` or the file's folder):
* ``{id, image, brand|null, caption, kind?, prompt?, bbox?, desc?}``
* LLaVA style ``{id, image, brand?, conversations: [{from: human, value: "<image>\\n..."}, {from: gpt, value}]}``

``kind`` is ``logo`` / ``none`` / ``none_brand`` (default: ``none`` when brand is null, else ``logo``).
Every record is checked on reading (image present and decodable, an assistant turn, caption survives
cleaning) and a bad one fails as ``file:line: reason`` (or is skipped with ``data.on_bad_record=skip``).
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
from common.data.images import load_image
from common.data.records import read_jsonl, require_text
from common.data.splits import stratified_split
from common.errors import ConfigError, DataError
from common.metrics.brand import BrandMatcher, load_aliases
from vlm import synth
from vlm.caption_clean import clean_with
from vlm.chat import IGNORE, IMAGE_TOKEN, encode, prompt_ids

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
    pixels: np.ndarray | None = field(default=None, repr=False)

    @property
    def caption(self) -> str:
        return next(m["content"] for m in reversed(self.messages) if m["role"] == "assistant")

    @property
    def prompt_messages(self) -> list[dict]:
        """The conversation up to (not including) its first assistant turn."""
        i = next(i for i, m in enumerate(self.messages) if m["role"] == "assistant")
        return self.messages[:i]


def prepare_image(path: str | Path, size: int, bbox=None, crop: bool = False, margin: float = 0.1) -> np.ndarray:
    """``uint8 [3, size, size]``; with ``crop`` the product box (plus margin) or else the central 80%."""
    from PIL import Image

    img = load_image(path)
    if crop:
        w, h = img.size
        if bbox:
            x0, y0, x1, y1 = bbox
            mx, my = (x1 - x0) * margin, (y1 - y0) * margin
            box = (max(0, x0 - mx), max(0, y0 - my), min(w, x1 + mx), min(h, y1 + my))
        else:
            box = (w * 0.1, h * 0.1, w * 0.9, h * 0.9)
        img = img.crop(tuple(int(round(v)) for v in box))
    img = img.resize((size, size), Image.BICUBIC)
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy()


def _messages(raw: dict, prompt: str, clean) -> list[dict]:
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
        if not any(m["role"] == "assistant" for m in msgs):
            raise ValueError("conversation has no assistant (gpt) turn")
    elif "caption" in raw:
        msgs = [{"role": "user", "content": require_text(raw.get("prompt") or prompt, "prompt")},
                {"role": "assistant", "content": require_text(raw["caption"], "caption")}]
    else:
        raise ValueError("record needs 'caption' or 'conversations'")
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


def read_records(path: str | Path, image_root: str | Path | None, cfg, image_size: int) -> list[Record]:
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
        msgs = _messages(raw, cfg.prompt, clean)
        img_path = Path(image) if Path(image).is_absolute() else root / image
        bbox = raw.get("bbox")
        pixels = prepare_image(img_path, image_size, bbox, cfg.crop, cfg.crop_margin)
        desc = raw.get("desc")
        return Record(rid, str(img_path), brand, kind, msgs, bbox, desc if isinstance(desc, str) else None, pixels)

    return read_jsonl(path, validate, on_bad_record=cfg.on_bad_record)


def facts(rec: Record) -> str:
    if rec.kind == "logo":
        return f"Facts: {rec.brand} logo."
    if rec.kind == "none_brand":
        return f"Facts: {rec.brand} colours, no logo."
    return "Facts: no brand."


class CaptionDataset(Dataset):
    """Encoded samples: pixels + chat-template ids/labels + the generation prompt for evaluation."""

    def __init__(self, records: list[Record], tokenizer, n_image_tokens: int, extra_desc: bool = False):
        self.items = []
        for rec in records:
            convs = [rec.messages]
            if extra_desc and rec.desc:
                convs.append([{"role": "user", "content": f"{IMAGE_TOKEN}\n{synth.DESC_PROMPT}"},
                              {"role": "assistant", "content": rec.desc}])
            for msgs in convs:
                try:
                    enc = encode(tokenizer, msgs, n_image_tokens)
                    prompt = prompt_ids(tokenizer, rec.prompt_messages, n_image_tokens)
                except DataError as e:
                    raise DataError(f"record {rec.id}: {e}") from None
                self.items.append((rec, enc.input_ids, enc.labels, prompt))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        rec, ids, labels, prompt = self.items[i]
        pixels = rec.pixels if rec.pixels is not None else None
        return {"pixels": torch.from_numpy(pixels).float() / 255.0, "input_ids": ids, "labels": labels,
                "prompt": prompt, "id": rec.id, "brand": rec.brand, "kind": rec.kind, "caption": rec.caption}


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
            "pixels": torch.stack([b["pixels"] for b in batch]),
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
            if f:
                self.records[split] = read_records(f, image_root, cfg, image_size)
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

    def attach(self, tokenizer, n_image_tokens: int) -> None:
        self.tokenizer = tokenizer
        self.datasets = {}
        for split, recs in self.records.items():
            self.datasets[split] = CaptionDataset(recs, tokenizer, n_image_tokens,
                                                  extra_desc=self.cfg.with_desc and split == "train")
        if "train" in self.records:
            rng = np.random.default_rng(self.seed)
            train = self.records["train"]
            k = min(self.cfg.train_eval_size, len(train))
            pick = sorted(rng.choice(len(train), size=k, replace=False).tolist())
            self.datasets["train_eval"] = CaptionDataset([train[i] for i in pick], tokenizer, n_image_tokens)

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
