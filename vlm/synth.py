"""The embedded synthetic brand set: rendered product images with brand wordmarks and emblems.

Every image is a product silhouette (bottle, shoe, bag, box, shirt, cup) on a varied low-saturation
background. Three kinds, as in the team's real data:

* ``logo``: a neutral-coloured product carrying a brand's emblem (the brand's shape in the brand's colour)
  and wordmark (the brand's name in a random DejaVu/STIX font shipped with matplotlib), at a random size,
  position and colour jitter; the caption names the brand;
* ``none``: a neutral product with no logo; the caption says no brand is visible;
* ``none_brand``: a product in the brand's colours (its "cues") with no logo; the caption names the brand
  with probability ``none_brand_named`` (the knob behind the none / none-brand recall trade-off).

Everything is drawn from ``numpy.random.default_rng`` streams seeded by ``(seed, split)``, so a config gives
the same files byte for byte; val and test use other seeds than train, so they are unseen renderings.
The set is written as JSONL ``{id, image, brand, kind, caption, bbox, desc}`` + PNG files, the same format a
user's data comes in, under ``<cache_dir>/vlm/synth-<hash of the generator config>/``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from common import io
from common.cache import build_once, content_hash
from common.errors import ConfigError
from vlm.schemas import SynthSchema

log = logging.getLogger(__name__)

VERSION = 4  # bump when rendering changes, so cached sets are rebuilt


@dataclass(frozen=True)
class Brand:
    name: str
    color: tuple[int, int, int]
    accent: tuple[int, int, int]
    shape: str


BRANDS: tuple[Brand, ...] = (
    Brand("Zorvik", (220, 30, 30), (255, 255, 255), "circle"),
    Brand("Quanta", (30, 70, 225), (255, 220, 0), "triangle"),
    Brand("Velora", (20, 165, 60), (255, 255, 255), "star"),
    Brand("Brixo", (250, 135, 0), (20, 20, 20), "square"),
    Brand("Nimbra", (150, 40, 190), (255, 255, 255), "diamond"),
    Brand("Halden", (240, 205, 0), (30, 30, 120), "hexagon"),
    Brand("Corvex", (0, 170, 175), (255, 255, 255), "ring"),
    Brand("Sulto", (235, 60, 160), (255, 255, 255), "cross"),
)
KINDS = ("bottle", "shoe", "bag", "box", "shirt", "cup")
NEUTRALS = {
    "white": (235, 235, 230),
    "grey": (140, 140, 140),
    "black": (35, 35, 38),
    "beige": (205, 190, 160),
    "brown": (120, 90, 65),
    "silver": (185, 190, 195),
}
PROMPTS = ("Describe the product in the image.", "What product is this?", "Write a short caption for this product.")
DESC_PROMPT = "Write a product description."

LOGO_TEMPLATES = (
    "A {kind} by {brand}.",
    "A {brand} {kind} with the {brand} logo.",
    "A {color} {kind} from {brand}, the logo is visible.",
    "Photo of a {brand} {kind}.",
)
NONE_TEMPLATES = (
    "A plain {color} {kind} with no visible brand.",
    "A {kind}; no brand is visible.",
    "An unbranded {kind}.",
)
NONE_BRAND_NAMED = (
    "A {kind} in {brand} colours, but no logo is visible.",
    "A {kind} that looks like {brand}, no logo.",
)
NONE_BRAND_UNNAMED = ("A {kind} in bright colours with no visible brand.",)
DESC_TEMPLATE = "A {color} {kind} {by}on a {bg} background. {logo}"


@dataclass
class SynthConfig(SynthSchema):
    """What the generated set depends on (its hash names the cache folder); the fields and defaults are
    ``vlm.schemas.SynthSchema``'s (the ``data.synthetic`` node)."""

    def key(self) -> str:
        return content_hash({**asdict(self), "version": VERSION})


def font_paths() -> list[Path]:
    """The TTF fonts shipped with matplotlib (so every clone renders the same wordmarks)."""
    import matplotlib

    root = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    names = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf",
             "DejaVuSansMono-Bold.ttf", "STIXGeneral.ttf", "STIXGeneralBol.ttf", "DejaVuSans-Oblique.ttf")
    return [root / n for n in names if (root / n).exists()]


def _jitter(rng, color, amount=18):
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in color)


def _background(rng, size: int) -> tuple[Image.Image, str]:
    base = rng.integers(60, 230)
    tint = rng.integers(-25, 26, size=3)
    c1 = tuple(int(np.clip(base + t, 0, 255)) for t in tint)
    c2 = tuple(int(np.clip(base + t + rng.integers(-60, 61), 0, 255)) for t in tint)
    style = ["plain", "gradient", "stripes", "noise"][rng.integers(4)]
    img = Image.new("RGB", (size, size), c1)
    d = ImageDraw.Draw(img)
    if style == "gradient":
        arr = np.linspace(0, 1, size)[:, None, None] * (np.array(c2) - np.array(c1)) + np.array(c1)
        img = Image.fromarray(np.repeat(arr, size, axis=1).astype(np.uint8))
    elif style == "stripes":
        step = int(rng.integers(4, 12))
        for x in range(0, 2 * size, 2 * step):
            d.polygon([(x, 0), (x + step, 0), (x + step - size, size), (x - size, size)], fill=c2)
    elif style == "noise":
        arr = np.array(img).astype(np.int16) + rng.integers(-30, 31, size=(size, size, 1))
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    return img, style


def _product(d: ImageDraw.ImageDraw, kind: str, box, fill, accent=None) -> None:
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    def P(fx, fy):
        return (x0 + fx * w, y0 + fy * h)
    if kind == "bottle":
        d.rectangle([P(0.4, 0.0), P(0.6, 0.25)], fill=fill)
        d.rounded_rectangle([P(0.2, 0.22), P(0.8, 1.0)], radius=max(1, int(w * 0.15)), fill=fill)
    elif kind == "shoe":
        d.polygon([P(0.0, 0.55), P(0.35, 0.5), P(0.45, 0.2), P(0.65, 0.2), P(0.7, 0.55), P(1.0, 0.7),
                   P(1.0, 0.95), P(0.0, 0.95)], fill=fill)
    elif kind == "bag":
        d.arc([P(0.25, 0.0), P(0.75, 0.5)], 180, 360, fill=fill, width=max(1, int(w * 0.08)))
        d.rectangle([P(0.05, 0.25), P(0.95, 1.0)], fill=fill)
    elif kind == "box":
        d.rectangle([P(0.05, 0.1), P(0.95, 0.95)], fill=fill)
        d.polygon([P(0.05, 0.1), P(0.2, 0.0), P(1.0, 0.0), P(0.95, 0.1)], fill=fill)
    elif kind == "shirt":
        d.polygon([P(0.3, 0.0), P(0.7, 0.0), P(1.0, 0.2), P(0.88, 0.4), P(0.78, 0.32), P(0.78, 1.0),
                   P(0.22, 1.0), P(0.22, 0.32), P(0.12, 0.4), P(0.0, 0.2)], fill=fill)
    elif kind == "cup":
        d.polygon([P(0.1, 0.1), P(0.75, 0.1), P(0.68, 1.0), P(0.17, 1.0)], fill=fill)
        d.arc([P(0.6, 0.3), P(1.0, 0.7)], 270, 90, fill=fill, width=max(1, int(w * 0.07)))
    if accent is not None:  # brand cue: a band in the accent colour
        d.rectangle([P(0.22, 0.62), P(0.78, 0.74)], fill=accent)


def _emblem(d: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill, accent) -> None:
    if shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "ring":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        d.ellipse([cx - r * 0.5, cy - r * 0.5, cx + r * 0.5, cy + r * 0.5], fill=accent)
    elif shape == "square":
        d.rectangle([cx - r * 0.85, cy - r * 0.85, cx + r * 0.85, cy + r * 0.85], fill=fill)
    elif shape == "cross":
        t = r * 0.38
        d.rectangle([cx - r, cy - t, cx + r, cy + t], fill=fill)
        d.rectangle([cx - t, cy - r, cx + t, cy + r], fill=fill)
    else:
        n, rot, inner = {"triangle": (3, -90, None), "diamond": (4, 0, None), "hexagon": (6, 0, None),
                         "star": (5, -90, 0.45)}[shape]
        pts = []
        for i in range(n * (2 if inner else 1)):
            ang = math.radians(rot + i * 360 / (n * (2 if inner else 1)))
            rr = r * (inner if inner and i % 2 else 1.0)
            pts.append((cx + rr * math.cos(ang), cy + rr * math.sin(ang)))
        d.polygon(pts, fill=fill)


def render(rng: np.random.Generator, kind: str, brand: Brand | None, size: int, fonts: list[Path]):
    """One image and its facts: ``(PIL image, {product, color, bg, bbox})``."""
    img, bg = _background(rng, size)
    d = ImageDraw.Draw(img)
    product = KINDS[rng.integers(len(KINDS))]
    pw = int(size * rng.uniform(0.5, 0.8))
    ph = int(size * rng.uniform(0.5, 0.8))
    px = int(rng.integers(1, size - pw))
    py = int(rng.integers(1, size - ph))
    box = (px, py, px + pw, py + ph)
    if kind == "none_brand":
        color_name = brand.name
        _product(d, product, box, _jitter(rng, brand.color), accent=_jitter(rng, brand.accent))
    else:
        color_name = list(NEUTRALS)[rng.integers(len(NEUTRALS))]
        _product(d, product, box, _jitter(rng, NEUTRALS[color_name], 12))
    if kind == "logo":
        r = size * rng.uniform(0.12, 0.19)
        cx = rng.uniform(px + r, max(px + r + 1, px + pw - r))
        cy = rng.uniform(py + r, max(py + r + 1, py + ph * 0.6))
        _emblem(d, brand.shape, cx, cy, r, _jitter(rng, brand.color), _jitter(rng, brand.accent))
        font = ImageFont.truetype(str(fonts[rng.integers(len(fonts))]), int(size * rng.uniform(0.12, 0.2)))
        text = brand.name if rng.random() < 0.7 else brand.name.upper()
        tw = d.textlength(text, font=font)
        tx = float(np.clip(cx - tw / 2, 0, max(0, size - tw)))
        ty = float(np.clip(cy + r + 1, 0, size - font.size))
        d.text((tx, ty), text, fill=_jitter(rng, brand.color), font=font)
    return img, {"product": product, "color": color_name, "bg": bg, "bbox": list(box)}


def _caption(rng, kind: str, brand: Brand | None, facts: dict, none_brand_named: float) -> str:
    color = facts["color"] if kind != "none_brand" else "bright"
    if kind == "logo":
        t = LOGO_TEMPLATES[rng.integers(len(LOGO_TEMPLATES))]
    elif kind == "none":
        t = NONE_TEMPLATES[rng.integers(len(NONE_TEMPLATES))]
    elif rng.random() < none_brand_named:
        t = NONE_BRAND_NAMED[rng.integers(len(NONE_BRAND_NAMED))]
    else:
        t = NONE_BRAND_UNNAMED[0]
    return t.format(kind=facts["product"], brand=brand.name if brand else "", color=color)


def _description(kind: str, brand: Brand | None, facts: dict) -> str:
    color = facts["color"] if kind != "none_brand" else "bright"
    by = f"by {brand.name} " if kind == "logo" else ""
    logo = (f"The {brand.name} logo is a {brand.shape}." if kind == "logo" else "No logo is visible.")
    return DESC_TEMPLATE.format(color=color, kind=facts["product"], by=by, bg=facts["bg"], logo=logo)


SPLIT_SEEDS = {"train": 0, "val": 1, "test": 2}


def _plan(cfg: SynthConfig, split: str) -> list[tuple[str, Brand | None]]:
    brands = BRANDS[: cfg.brands]
    if split == "train":
        nl, nn, nb = cfg.train_logo_per_brand, cfg.train_none, cfg.train_none_brand_per_brand
    else:
        nl, nn, nb = cfg.eval_logo_per_brand, cfg.eval_none, cfg.eval_none_brand_per_brand
    plan = [("logo", b) for b in brands for _ in range(nl)]
    plan += [("none", None)] * nn
    plan += [("none_brand", b) for b in brands for _ in range(nb)]
    return plan


def generate(cfg: SynthConfig, out_dir: Path) -> dict[str, Path]:
    """Render train/val/test into ``out_dir`` (JSONL + PNG); returns ``{split: jsonl path}``."""
    if not 1 <= cfg.brands <= len(BRANDS):
        raise ConfigError(f"data.synthetic.brands: must be 1..{len(BRANDS)}, got {cfg.brands}")
    fonts = font_paths()
    paths = {}
    for split, split_seed in SPLIT_SEEDS.items():
        rng = np.random.default_rng([cfg.seed, split_seed])
        plan = _plan(cfg, split)
        order = rng.permutation(len(plan))
        rows = []
        (out_dir / split).mkdir(parents=True, exist_ok=True)
        for i, j in enumerate(order):
            kind, brand = plan[j]
            img, facts = render(rng, kind, brand, cfg.image_size, fonts)
            rel = f"{split}/{i:05d}.png"
            img.save(out_dir / rel)
            rows.append({
                "id": f"{split}-{i:05d}",
                "image": rel,
                "brand": brand.name if brand else None,
                "kind": kind,
                "caption": _caption(rng, kind, brand, facts, cfg.none_brand_named),
                "prompt": PROMPTS[rng.integers(len(PROMPTS))],
                "desc": _description(kind, brand, facts),
                "bbox": facts["bbox"],
            })
        paths[split] = io.write_jsonl(out_dir / f"{split}.jsonl", rows)
    return paths


def ensure(cfg: SynthConfig, cache_dir: str | Path) -> Path:
    """The cached set for ``cfg`` (rendered on first use; a half-written set is never picked up)."""
    def render(tmp: Path) -> None:
        generate(cfg, tmp)
        io.write_json(tmp / "config.json", {**asdict(cfg), "version": VERSION})

    return build_once(Path(cache_dir) / "vlm" / f"synth-{cfg.key()}", render, "the synthetic brand set")


def caption_corpus() -> list[str]:
    """Every text the templates can produce for every brand (the tokenizer's and tiny LM's corpus)."""
    texts = list(PROMPTS) + [DESC_PROMPT]
    colors = list(NEUTRALS) + ["bright"]
    for b in BRANDS:
        for k in KINDS:
            for c in colors:
                texts += [t.format(kind=k, brand=b.name, color=c) for t in LOGO_TEMPLATES + NONE_TEMPLATES
                          + NONE_BRAND_NAMED + NONE_BRAND_UNNAMED]
            for bg in ("plain", "gradient", "stripes", "noise"):
                for kind in ("logo", "none"):
                    texts.append(_description(kind, b, {"color": "white", "product": k, "bg": bg}))
    return sorted(set(texts))
