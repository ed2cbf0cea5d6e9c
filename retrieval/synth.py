"""The embedded synthetic product set: groups of the same product, different photos, paraphrased titles.

Every product is (brand, type, model, size). Its photos are PIL renderings that differ in crop, colour
cast, background, rotation and scale (an "angle-like" change); the brand fixes the body colour and the
model the pattern (stripes, band colour), so a same-brand other-model product is a *hard negative* that
looks alike. Titles paraphrase the product: unit variants (``500ml``/``0.5 L``/``500 ML``), abbreviations,
shop noise (``[READY STOCK]``, ``COD``), mixed languages (Indonesian / Chinese words) and reordering.
Products of the same brand and type but another model or size are generated on purpose.

``generate(out_dir, ...)`` writes ``products.csv`` in the Shopee format
(``posting_id,image,image_phash,title,label_group``) plus ``images/`` and is deterministic in ``seed``;
``ensure(cache_dir, ...)`` reuses a finished set keyed by its parameters.
"""

from __future__ import annotations

import csv
import io as _io
import json
import math
import random
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

from common import io
from common.cache import build_once, content_hash

BRANDS = {  # name -> body colour
    "Nuvella": (200, 40, 60), "Kairo": (30, 90, 200), "Sakura": (240, 150, 190), "Orbix": (40, 160, 80),
    "Valmont": (90, 60, 40), "Zentra": (250, 200, 30), "Pixalo": (120, 40, 160), "Duro": (60, 60, 60),
    "Lumio": (20, 180, 190), "Brava": (240, 110, 20), "Hoshi": (230, 230, 235), "Mekar": (140, 170, 40),
}
# type -> (shape, unit family, Indonesian name, Chinese name, abbreviation)
TYPES = {
    "shampoo": ("bottle", "ml", "sampo", "洗发水", "shmp"),
    "face wash": ("tube", "ml", "sabun muka", "洗面奶", "fcwash"),
    "power bank": ("box", "mah", "power bank", "充电宝", "pwrbank"),
    "earbuds": ("round", "pcs", "earphone", "耳机", "ebuds"),
    "rice cooker": ("round", "l", "penanak nasi", "电饭煲", "rc"),
    "body lotion": ("bottle", "ml", "losion badan", "身体乳", "lotion"),
    "phone case": ("box", "model", "casing hp", "手机壳", "case"),
    "coffee beans": ("bag", "g", "biji kopi", "咖啡豆", "coffee"),
}
SIZES = {"ml": [100, 250, 500, 1000], "mah": [5000, 10000, 20000], "pcs": [1, 2], "l": [1, 2],
         "model": [11, 12, 13], "g": [250, 500, 1000]}
PATTERN_COLOURS = [(255, 255, 255), (0, 0, 0), (255, 215, 0), (0, 200, 255), (255, 0, 120), (0, 150, 60)]
BACKGROUNDS = [(245, 245, 245), (220, 210, 190), (180, 200, 220), (40, 40, 50), (200, 230, 200), (250, 235, 215)]
NOISE = ["[READY STOCK]", "READY!!", "COD", "PROMO", "Original 100%", "BPOM", "Murah", "Termurah", "现货", "正品",
         "Free Gift", "[HOT SALE]", "Grosir", "ASLI"]


@dataclass(frozen=True)
class Product:
    group: str
    brand: str
    type: str
    model: str
    size: int
    pattern: int  # stripes 1..4
    band: int     # index into PATTERN_COLOURS
    vertical: bool


def _size_text(size: int, unit: str, rng: random.Random) -> str:
    if unit == "ml":
        opts = [f"{size}ml", f"{size} mL", f"{size}ML", f"{size / 1000:g}L" if size >= 250 else f"{size} ml"]
    elif unit == "mah":
        opts = [f"{size}mAh", f"{size} MAH", f"{size // 1000}K mAh", f"{size // 1000}000mah"]
    elif unit == "l":
        opts = [f"{size}L", f"{size} Liter", f"{size} ltr", f"{size * 1000}ml"]
    elif unit == "g":
        opts = [f"{size}g", f"{size} gr", f"{size / 1000:g}kg" if size >= 500 else f"{size} gram", f"{size}G"]
    elif unit == "pcs":
        opts = [f"{size} pcs", f"{size}pc", f"isi {size}", f"{size} pair"]
    else:  # phone model sizes
        opts = [f"iPhone {size}", f"ip{size}", f"for iPhone {size}", f"IP {size}"]
    return rng.choice(opts)


def title(p: Product, rng: random.Random) -> str:
    shape, unit, ind, zh, abbr = TYPES[p.type]
    r = rng.random()
    type_word = p.type if r < 0.45 else abbr if r < 0.6 else ind if r < 0.85 else zh
    model = rng.choice([p.model, p.model.lower(), p.model.replace("-", ""), p.model.replace("-", " ")])
    brand = rng.choice([p.brand, p.brand.upper(), p.brand.lower()])
    core = [brand, type_word, model, _size_text(p.size, unit, rng)]
    if rng.random() < 0.3:
        core[1], core[2] = core[2], core[1]
    if rng.random() < 0.2:
        core = core[:1] + core[2:] + core[1:2]
    words = core
    if rng.random() < 0.6:
        words = [rng.choice(NOISE)] + words
    if rng.random() < 0.4:
        words = words + [rng.choice(NOISE + ["new", "baru", "2024", "best seller"])]
    text = " ".join(words)
    return text.upper() if rng.random() < 0.1 else text


def render(p: Product, rng: random.Random, size: int) -> Image.Image:
    """One photo of ``p``: body colour from the brand, stripes from the model, random view and background."""
    big = size * 2
    bg = tuple(min(255, max(0, c + rng.randint(-25, 25))) for c in rng.choice(BACKGROUNDS))
    im = Image.new("RGB", (big, big), bg)
    d = ImageDraw.Draw(im)
    for _ in range(rng.randint(0, 4)):  # background clutter
        x, y = rng.randint(0, big), rng.randint(0, big)
        c = tuple(min(255, max(0, v + rng.randint(-50, 50))) for v in bg)
        d.ellipse([x - 10, y - 10, x + rng.randint(5, 30), y + rng.randint(5, 30)], fill=c)
    body = BRANDS[p.brand]
    shape = TYPES[p.type][0]
    scale = rng.uniform(0.55, 0.85)
    w, h = {"bottle": (0.45, 0.9), "tube": (0.35, 0.95), "box": (0.75, 0.6), "round": (0.8, 0.8), "bag": (0.65, 0.85)}[shape]
    w, h = w * big * scale, h * big * scale
    cx, cy = big / 2 + rng.uniform(-0.1, 0.1) * big, big / 2 + rng.uniform(-0.1, 0.1) * big
    box = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
    layer = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    ld = ImageDraw.Draw(layer)
    if shape == "round":
        ld.ellipse(box, fill=body + (255,))
    elif shape == "bottle":
        ld.rounded_rectangle(box, radius=int(w / 4), fill=body + (255,))
        ld.rectangle([cx - w / 6, box[1] - h * 0.12, cx + w / 6, box[1] + 2], fill=(30, 30, 30, 255))
    else:
        ld.rounded_rectangle(box, radius=int(w / 10), fill=body + (255,))
    band = PATTERN_COLOURS[p.band]
    for k in range(p.pattern):  # the model's pattern
        if p.vertical:
            x0 = box[0] + w * (k + 1) / (p.pattern + 1)
            ld.rectangle([x0 - w * 0.06, box[1] + h * 0.1, x0 + w * 0.06, box[3] - h * 0.1], fill=band + (255,))
        else:
            y0 = box[1] + h * (k + 1) / (p.pattern + 1)
            ld.rectangle([box[0] + w * 0.1, y0 - h * 0.05, box[2] - w * 0.1, y0 + h * 0.05], fill=band + (255,))
    layer = layer.rotate(rng.uniform(-25, 25), resample=Image.BICUBIC, center=(cx, cy))
    im.paste(layer, (0, 0), layer)
    # crop (zoom / off-centre view), colour cast, blur
    c = rng.uniform(0.75, 1.0) * big
    x0, y0 = rng.uniform(0, big - c), rng.uniform(0, big - c)
    im = im.crop((int(x0), int(y0), int(x0 + c), int(y0 + c))).resize((size, size), Image.BILINEAR)
    cast = [rng.uniform(0.8, 1.2) for _ in range(3)]
    im = Image.merge("RGB", [ch.point(lambda v, f=f: min(255, int(v * f))) for ch, f in zip(im.split(), cast, strict=True)])
    if rng.random() < 0.3:
        im = im.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    return im


def products(n_groups: int, seed: int) -> list[Product]:
    """``n_groups`` distinct products; about half come in families of the same brand+type (hard negatives)."""
    rng = random.Random(seed)
    out: list[Product] = []
    seen: set = set()
    brands, types = list(BRANDS), list(TYPES)
    while len(out) < n_groups:
        brand, typ = rng.choice(brands), rng.choice(types)
        unit = TYPES[typ][1]
        family = rng.randint(1, 4)  # siblings: other model or other size of the same brand+type
        base_model = f"{rng.choice('ABCDEFGHKMPRSTVXZ')}{rng.choice('ABCDEFGHKMPRSTVXZ')}-{rng.randint(1, 99) * 10}"
        for k in range(family):
            if len(out) >= n_groups:
                break
            if k == 0 or rng.random() < 0.5:
                model = base_model if k == 0 else f"{base_model.split('-')[0]}-{rng.randint(1, 99) * 10}"
                size = rng.choice(SIZES[unit])
            else:
                model, size = base_model, rng.choice(SIZES[unit])
            key = (brand, typ, model, size)
            if key in seen:
                continue
            seen.add(key)
            style = random.Random(f"{brand}|{typ}|{model}")  # the pattern belongs to the model
            out.append(Product(f"g{len(out):05d}", brand, typ, model, size, style.randint(1, 4),
                               style.randrange(len(PATTERN_COLOURS)), style.random() < 0.5))
    return out


def _phash(im: Image.Image) -> str:
    """A tiny average hash (the Shopee CSV has an ``image_phash`` column; nothing relies on it)."""
    g = im.convert("L").resize((8, 8))
    px = list(g.getdata())
    avg = sum(px) / len(px)
    return f"{int(''.join('1' if v > avg else '0' for v in px), 2):016x}"


def generate(out_dir: str | Path, n_groups: int = 300, min_per_group: int = 2, max_per_group: int = 4,
             image_size: int = 64, seed: int = 0, progress: bool = True) -> Path:
    """Write ``products.csv`` (Shopee format) and ``images/`` under ``out_dir`` (replacing what is there, whole or
    not at all: :func:`common.cache.build_once`); returns the CSV path."""
    out_dir = Path(out_dir)
    shutil.rmtree(out_dir, ignore_errors=True)
    build_once(out_dir, lambda tmp: _render_set(tmp, n_groups, min_per_group, max_per_group, image_size, seed, progress))
    return out_dir / "products.csv"


def _render_set(tmp: Path, n_groups: int = 300, min_per_group: int = 2, max_per_group: int = 4, image_size: int = 64,
                seed: int = 0, progress: bool = True) -> None:
    (tmp / "images").mkdir(parents=True)
    rng = random.Random(seed + 1)
    rows, meta = [], []
    prods = products(n_groups, seed)
    it = prods
    if progress:
        from tqdm import tqdm

        it = tqdm(prods, desc="synthetic products", leave=False)
    for p in it:
        for _ in range(rng.randint(min_per_group, max_per_group)):
            pid = f"train_{len(rows):06d}"
            im = render(p, rng, image_size)
            buf = _io.BytesIO()
            im.save(buf, format="PNG")
            (tmp / "images" / f"{pid}.png").write_bytes(buf.getvalue())
            rows.append({"posting_id": pid, "image": f"{pid}.png", "image_phash": _phash(im),
                         "title": title(p, rng), "label_group": p.group})
        meta.append(asdict(p))
    with (tmp / "products.csv").open("w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["posting_id", "image", "image_phash", "title", "label_group"])
        w.writeheader()
        w.writerows(rows)
    io.write_jsonl(tmp / "products_meta.jsonl", meta)


def ensure(cache_dir: str | Path, **params) -> Path:
    """The CSV of a synthetic set with these parameters, generated once under ``cache_dir``."""
    out = Path(cache_dir) / "retrieval" / f"synth_{content_hash(params)}"
    build_once(out, lambda tmp: _render_set(tmp, **params), "the synthetic product set")
    return out / "products.csv"


def brand_of(meta_path: str | Path) -> dict[str, str]:
    """``label_group -> brand+type`` from the generator's side file (for same-brand negative sampling)."""
    out = {}
    for line in Path(meta_path).read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        out[r["group"]] = f"{r['brand']}|{r['type']}"
    return out


if __name__ == "__main__":
    print(generate(sys.argv[1] if len(sys.argv) > 1 else "synth_out", n_groups=int(math.inf if False else 20)))
