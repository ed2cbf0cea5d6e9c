"""The brand-caption records (``vlm.data``) as inputs of a whole VLM: its own processor and chat template.

Each record's conversation becomes content parts (``{"type": "image"}`` where the record has ``<image>``, then
the text) rendered by ``processor.apply_chat_template``; the text up to the first assistant turn is rendered
with ``add_generation_prompt=True`` and must be a prefix of the full conversation, else the labels would be
wrong (a template mismatch, refused when the data is attached). A batch is built by the processor itself
(``processor(images=..., text=...)``: image tokens expanded the family's way, anyres / dynamic-resolution pixels)
in the DataLoader's collate, so pixels are decoded per batch as in ``vlm.data``. Labels are each assistant
turn's tokens after its generation prompt (with its end-of-turn token); prompts, other turns, image tokens and
padding are -100, and a row with no supervised token left (a template that drops the assistant turn, a
``model.max_length`` that cuts it) stops with one line naming the record.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from common.errors import ConfigError
from vlm.chat import IGNORE, IMAGE_TOKEN, TemplateError
from vlm.data import BrandCaptionData, Record
from vlm.images import BAD_IMAGE, _corrupt, crop_box

THUMB = 64  # the sample grid's image size


def parts(messages: list[dict]) -> list[dict]:
    """``{"role", "content": "<image>\\ntext"}`` -> ``{"role", "content": [{"type": "image"}, {"type": "text", ...}]}``."""
    out = []
    for m in messages:
        text = str(m["content"])
        content = [{"type": "image"}] * text.count(IMAGE_TOKEN)
        content.append({"type": "text", "text": text.replace(IMAGE_TOKEN + "\n", "").replace(IMAGE_TOKEN, "").strip()})
        out.append({"role": m["role"], "content": content})
    return out


def render(processor, messages: list[dict], add_generation_prompt: bool) -> str:
    try:
        return processor.apply_chat_template(parts(messages), tokenize=False, add_generation_prompt=add_generation_prompt)
    except Exception as e:
        raise TemplateError(f"chat template failed: {type(e).__name__}: {e}") from None


def load_image(path: str, bbox=None, crop: bool = False, margin: float = 0.1) -> Image.Image:
    try:
        with Image.open(path) as im:
            img = im.convert("RGB")
    except FileNotFoundError:
        from common.errors import DataError

        raise DataError(f"{path}: missing image") from None
    except BAD_IMAGE as e:
        raise _corrupt(path, e) from None
    box = crop_box(img.size, bbox, crop, margin)
    return img.crop(box) if box is not None else img


@dataclass
class Item:
    rec: Record
    full: str  # the conversation, rendered
    prompt: str  # up to the first generation prompt (what generation sees)
    turns: list[tuple[str, str]]  # per assistant turn: the text up to its generation prompt, and up to its end


def _turns(processor, messages: list[dict]) -> tuple[str, list[tuple[str, str]]]:
    full = render(processor, messages, add_generation_prompt=False)
    turns = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prefix = render(processor, messages[:i], add_generation_prompt=True)
        upto = render(processor, messages[: i + 1], add_generation_prompt=False)
        if not full.startswith(prefix) or not upto.startswith(prefix):
            raise TemplateError(f"chat template mismatch: the conversation up to the generation prompt of assistant "
                                f"turn {i} is not a prefix of the full conversation")
        if not str(m["content"]).strip() or str(m["content"]).strip() not in upto[len(prefix):]:
            raise TemplateError(f"the chat template does not render assistant turn {i} after its generation prompt: "
                                "no token to supervise")
        turns.append((prefix, upto))
    return full, turns


class HfCaptionDataset(Dataset):
    def __init__(self, records: list[Record], processor, crop: bool = False, crop_margin: float = 0.1):
        self.crop, self.crop_margin = bool(crop), float(crop_margin)
        self.items = []
        for rec in records:
            try:
                full, turns = _turns(processor, rec.messages)
            except TemplateError as e:
                raise TemplateError(f"record {rec.id}: {e}") from None
            self.items.append(Item(rec, full, turns[0][0], turns))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        it = self.items[i]
        img = load_image(it.rec.image, it.rec.bbox, self.crop, self.crop_margin)
        return {"item": it, "image": img}


def _common(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _labels(processor, enc, batch: list[dict], max_length: int | None) -> torch.Tensor:
    """Labels of a right-padded batch ``enc``: the tokens of each assistant turn (up to its end-of-turn), -100 on
    the prompts, other turns, image tokens and padding. Token positions come from tokenizing the rendered text
    (without images) up to each turn: the processor's image-token expansion lies before the first of them."""
    tok = processor.tokenizer
    texts = [t for b in batch for t in (b["item"].full, *(x for turn in b["item"].turns for x in turn))]
    plain = iter(tok(texts, add_special_tokens=False)["input_ids"])
    ids, mask = enc["input_ids"], enc["attention_mask"]
    labels = torch.full_like(ids, IGNORE)
    for i, b in enumerate(batch):
        pf = next(plain)
        turns = [(next(plain), next(plain)) for _ in b["item"].turns]
        rid = b["item"].rec.id
        first = len(turns[0][0])
        if pf[:first] != turns[0][0]:
            raise TemplateError(f"record {rid}: the tokens of the generation prompt are not a prefix of the "
                                "conversation's (the tokenizer merges across the assistant turn's start)")
        length = int(mask[i].sum())
        shift = length - len(pf)  # image tokens (and any special tokens the processor adds) before the first turn
        if ids[i, shift + first:length].tolist() != pf[first:]:
            raise TemplateError(f"record {rid}: the processor's input ids do not end with the assistant turn's tokens")
        for pre, upto in turns:
            a, z = _common(pre, pf), _common(upto, pf)
            labels[i, shift + a:shift + z] = ids[i, shift + a:shift + z]
        if max_length is not None:
            labels[i, max_length:] = IGNORE
        if not bool((labels[i] != IGNORE).any()):
            start = shift + first
            why = (f"model.max_length={max_length} cuts it (the prompt, image tokens included, is {start} tokens)"
                   if max_length is not None and start >= max_length else "the chat template renders no assistant token")
            raise TemplateError(f"record {rid}: no supervised token: {why}")
    return labels


def _thumbs(images: list[Image.Image]) -> torch.Tensor:
    return torch.from_numpy(np.stack([np.asarray(im.resize((THUMB, THUMB), Image.BICUBIC), np.uint8).transpose(2, 0, 1)
                                      for im in images]))


def collate(processor, max_length: int | None, train: bool):
    """A batch: ``inputs`` (the processor's tensors of the conversations, right-padded) and ``labels``; for
    evaluation also ``gen`` (the prompts, left-padded, for ``generate``), ``thumbs`` and ``meta``."""

    def fn(batch: list[dict]) -> dict:
        images = [b["image"] for b in batch]
        enc = processor(images=images, text=[b["item"].full for b in batch], padding=True, padding_side="right",
                        return_tensors="pt")
        labels = _labels(processor, enc, batch, max_length)
        inputs = dict(enc)
        if max_length is not None and inputs["input_ids"].shape[1] > max_length:
            inputs = {k: (v[:, :max_length] if k in ("input_ids", "attention_mask", "mm_token_type_ids",
                                                   "token_type_ids") else v) for k, v in inputs.items()}
            labels = labels[:, :max_length]
        out = {"inputs": inputs, "labels": labels, "n": len(batch),
               "meta": [{"id": b["item"].rec.id, "brand": b["item"].rec.brand, "kind": b["item"].rec.kind,
                         "caption": b["item"].rec.caption} for b in batch]}
        if not train:
            out["gen"] = dict(processor(images=images, text=[b["item"].prompt for b in batch], padding=True,
                                        padding_side="left", return_tensors="pt"))
            out["thumbs"] = _thumbs(images)
        return out

    return fn


class HfCaptionData(BrandCaptionData):
    """The same records and splits as the composed captioner's; ``attach_processor(processor)`` encodes them."""

    def attach_processor(self, processor, max_length: int | None = None) -> None:
        if int(self.cfg.tiles.max_num) > 1:
            raise ConfigError("data.tiles.max_num: model=hf_vlm tiles images with its own processor (anyres, dynamic "
                              "resolution); leave data.tiles at 1")
        self.processor, self.max_length = processor, max_length
        self.tokenizer = processor.tokenizer
        self.datasets = {}
        for split, recs in self.records.items():
            self.datasets[split] = self._dataset(recs)
        if "train" in self.records:
            rng = np.random.default_rng(self.seed)
            train = self.records["train"]
            k = min(self.cfg.train_eval_size, len(train))
            pick = sorted(rng.choice(len(train), size=k, replace=False).tolist())
            self.datasets["train_eval"] = self._dataset([train[i] for i in pick])
        for split, ds in self.datasets.items():  # one batch each through the processor: a mismatch fails now
            if len(ds):
                collate(processor, max_length, split == "train")([ds[0]])

    def _dataset(self, recs: list[Record], extra_desc: bool = False) -> HfCaptionDataset:
        return HfCaptionDataset(recs, self.processor, crop=self.cfg.crop, crop_margin=self.cfg.crop_margin)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if self.tokenizer is None:
            raise RuntimeError("HfCaptionData.attach_processor(processor) was not called")
        bs = self.cfg.batch_size if shuffle else self.cfg.eval_batch_size
        g = torch.Generator().manual_seed(self.seed)
        return DataLoader(self.datasets[split], batch_size=bs, shuffle=shuffle, generator=g,
                          num_workers=self.cfg.num_workers, collate_fn=collate(self.processor, self.max_length, shuffle))
