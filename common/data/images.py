"""Image loading that fails (or skips) with the file's name instead of a PIL traceback deep in a worker."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError

from common.errors import DataError


def load_image(path: str | Path, mode: str = "RGB") -> Image.Image:
    """Fully decoded image in ``mode``; :class:`DataError` ``path: missing image`` / ``corrupt image``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: missing image")
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert(mode)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: corrupt image ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None


def check_image(path: str | Path) -> str:
    """Verify an image without keeping it (for readers that validate records up front); returns the path."""
    load_image(path).close()
    return str(path)
