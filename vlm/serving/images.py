"""A request's ``image_url`` -> a PIL image: a data URL, a ``file://`` URL or a plain path on the server's disk.

The pixel count is checked from the image header, before a single pixel is decoded (a PNG of a few KB can
decode to gigabytes). Remote ``http(s)`` URLs are refused: this server fetches nothing.
"""

from __future__ import annotations

import base64
import binascii
import io
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from PIL import Image, UnidentifiedImageError

from .errors import ClientError

MAX_IMAGE_PIXELS = 4096 * 4096


def decode_image(url: str, allow_files: bool = True, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """An RGB image, or :class:`ClientError` (param ``messages``) saying what is wrong with the URL."""
    if url.startswith("data:"):
        head, sep, data = url.partition(",")
        if not sep or ";base64" not in head:
            raise ClientError("image_url: a data URL must look like data:image/png;base64,<data>", param="messages")
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise ClientError("image_url: the data URL is not valid base64", param="messages") from None
        source: Any = io.BytesIO(raw)
        where = "data URL"
    elif url.startswith(("http://", "https://")):
        raise ClientError("image_url: remote URLs are not fetched by this server; send a data URL or a file path", param="messages")
    else:
        if not allow_files:
            raise ClientError("image_url: file paths are disabled on this server; send a data URL", param="messages")
        path = Path(unquote(urlparse(url).path) if url.startswith("file://") else url)
        if not path.is_file():
            raise ClientError(f"image_url: no such image file: {path}", param="messages")
        source, where = path, str(path)
    try:
        with Image.open(source) as im:
            w, h = im.size
            if w * h > max_pixels:
                raise ClientError(f"image_url: {where} is {w}x{h} pixels, more than this server's {max_pixels}", status=413, param="messages")
            im.load()
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise ClientError(f"image_url: {where} is not a readable image", param="messages") from None
