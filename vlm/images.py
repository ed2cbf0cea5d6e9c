"""A record's pixels: the header check that runs when records are read, and the bounded decode into tiles
that runs in ``Dataset.__getitem__`` (DataLoader workers), so no decoded image is kept per record.

Tiling is InternVL's ``dynamic_preprocess``: among the grids ``cols x rows`` with ``min_num <= cols*rows <=
max_num`` the one whose aspect ratio is closest to the image's (ties: more tiles while the image covers more
than half of them) -- the rule as transformers' InternVL image processor implements it
(``get_optimal_tiled_canvas``) --, the image resized to ``cols*tile x rows*tile`` and cut row by row, plus a
``tile x tile`` thumbnail of the whole image when there is more than one tile. ``max_num=1``: one square
image, as without tiling.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from common.errors import DataError

BAD_IMAGE = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def _corrupt(path: Path, e: BaseException) -> DataError:
    detail = str(e).splitlines()[0] if str(e) else ""
    return DataError(f"{path}: corrupt image ({type(e).__name__}: {detail})")


def header(path: str | Path, max_pixels: int) -> tuple[int, int]:
    """``(width, height)`` from the file's header, checked (``Image.verify``) without decoding the pixels;
    DataError ``missing image`` / ``corrupt image`` / over ``max_pixels``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: missing image")
    try:
        with Image.open(path) as im:
            size = im.size
            im.verify()
    except Image.DecompressionBombError:
        raise DataError(f"{path}: image too large to open (over data.max_image_pixels={max_pixels})") from None
    except BAD_IMAGE as e:
        raise _corrupt(path, e) from None
    if size[0] * size[1] > max_pixels:
        raise DataError(f"{path}: {size[0]}x{size[1]} image is over data.max_image_pixels={max_pixels}")
    if min(size) < 1:
        raise DataError(f"{path}: empty image {size[0]}x{size[1]}")
    return size


def crop_box(size: tuple[int, int], bbox, crop: bool, margin: float) -> tuple[int, int, int, int] | None:
    """With ``crop``: the product box plus ``margin`` (else the central 80 %) in pixels of an image of ``size``."""
    if not crop:
        return None
    w, h = size
    if bbox:
        x0, y0, x1, y1 = bbox
        mx, my = (x1 - x0) * margin, (y1 - y0) * margin
        box = (max(0, x0 - mx), max(0, y0 - my), min(w, x1 + mx), min(h, y1 + my))
    else:
        box = (w * 0.1, h * 0.1, w * 0.9, h * 0.9)
    return tuple(int(round(v)) for v in box)


def grid(size: tuple[int, int], tile: int, max_num: int, min_num: int = 1) -> tuple[int, int]:
    """``(cols, rows)`` of InternVL's tiling for an image of ``size = (width, height)``."""
    if max_num <= 1:
        return 1, 1
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import get_optimal_tiled_canvas

    w, h = size
    return get_optimal_tiled_canvas((h, w), (tile, tile), min_num, max_num)


def num_tiles(size: tuple[int, int], tile: int, max_num: int, min_num: int = 1) -> int:
    """Tiles the image becomes: the grid, plus the thumbnail when the grid has more than one tile."""
    cols, rows = grid(size, tile, max_num, min_num)
    return cols * rows + (1 if cols * rows > 1 else 0)


def cropped_size(size: tuple[int, int], bbox, crop: bool, margin: float) -> tuple[int, int]:
    box = crop_box(size, bbox, crop, margin)
    return size if box is None else (max(1, box[2] - box[0]), max(1, box[3] - box[1]))


def tiles_of(img: Image.Image, tile: int, max_num: int = 1, min_num: int = 1,
             cols_rows: tuple[int, int] | None = None) -> np.ndarray:
    """``uint8 [n, 3, tile, tile]``: the grid's tiles row by row, then the thumbnail (when n > 1).
    ``cols_rows``: the grid already chosen (from the full-resolution size, before a reduced decode)."""
    img = img.convert("RGB")
    cols, rows = cols_rows or grid(img.size, tile, max_num, min_num)
    canvas = img.resize((cols * tile, rows * tile), Image.BICUBIC)
    out = [canvas.crop((c * tile, r * tile, (c + 1) * tile, (r + 1) * tile)) for r in range(rows) for c in range(cols)]
    if len(out) > 1:
        out.append(img.resize((tile, tile), Image.BICUBIC))
    return np.stack([np.asarray(t, dtype=np.uint8).transpose(2, 0, 1) for t in out])


def load_tiles(path: str | Path, tile: int, max_num: int = 1, min_num: int = 1, bbox=None, crop: bool = False,
               margin: float = 0.1) -> np.ndarray:
    """Decode ``path`` (JPEG: at the smallest scale that still covers the tiles, via ``Image.draft``), crop,
    tile: ``uint8 [n, 3, tile, tile]``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: missing image")
    try:
        with Image.open(path) as im:
            w0, h0 = im.size
            box = crop_box((w0, h0), bbox, crop, margin)
            bw, bh = (w0, h0) if box is None else (max(1, box[2] - box[0]), max(1, box[3] - box[1]))
            cols, rows = grid((bw, bh), tile, max_num, min_num)
            need = (math.ceil(cols * tile * w0 / bw), math.ceil(rows * tile * h0 / bh))
            im.draft("RGB", need)  # JPEG only: decode at 1/2, 1/4, 1/8 scale when that still covers `need`
            im.load()
            img = im.convert("RGB")
    except BAD_IMAGE as e:
        raise _corrupt(path, e) from None
    if box is not None:
        sx, sy = img.size[0] / w0, img.size[1] / h0
        img = img.crop((round(box[0] * sx), round(box[1] * sy), round(box[2] * sx), round(box[3] * sy)))
    return tiles_of(img, tile, cols_rows=(cols, rows))
