"""The CJK font every picture uses (posters, charts): Noto Sans SC, installed from PyPI with the
project (justmytype-intl-cjk), so Chinese renders with real glyphs on a fresh machine."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from PIL import ImageFont


@lru_cache(maxsize=1)
def cjk_font_path() -> Path:
    import justmytype_intl_cjk

    path = Path(justmytype_intl_cjk.__file__).parent / "fonts" / "ofl" / "notosanssc" / "NotoSansSC[wght].ttf"
    if not path.is_file():
        raise FileNotFoundError(f"the CJK font is missing at {path}; reinstall the project")
    return path


@lru_cache(maxsize=64)
def cjk_font(size: int, weight: str = "Regular") -> ImageFont.FreeTypeFont:
    """Noto Sans SC at a pixel size; weight is a named instance: Regular, Medium, Bold, ..."""
    font = ImageFont.truetype(str(cjk_font_path()), size)
    font.set_variation_by_name(weight)
    return font
