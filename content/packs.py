"""The content-pack validator: one for the HTTP upload and `distbot content import`.

`validate_pack(path)` reads a zip (see content.safezip), checks manifest.toml and every file it
names, and returns a ValidPack, or raises PackInvalid with every problem found, each naming the
file and the field. CPU work (zip, Pillow, Jinja): call it from a thread.
"""

from __future__ import annotations

import hashlib
import io
import re
import tomllib
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import ImageColor, ImageFont

from content import templating
from content.templating import product_variables
from content.images import BadImage, open_image
from content.pages import markdown_html
from content.safezip import SafeZip, UnsafeZip, normalise

MANIFEST = "manifest.toml"
MAX_UPLOAD_BYTES = 50 * 1024 * 1024
MAX_TEXT_BYTES = 1024 * 1024
MAX_FONT_BYTES = 32 * 1024 * 1024
MIN_QR_SIZE = 90
WEIGHTS = ("Thin", "ExtraLight", "Light", "Regular", "Medium", "SemiBold", "Bold", "ExtraBold", "Black")
ALIGNS = ("left", "center", "right")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,31}$")
_KEY = re.compile(r"^\w[\w.-]{0,63}$")
_TOML_POS = re.compile(r"\(at line (\d+), column (\d+)\)")


@dataclass(frozen=True)
class Problem:
    file: str
    field: str
    message: str
    line: int | None = None
    column: int | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"file": self.file, "field": self.field, "message": self.message}
        if self.line is not None:
            out["line"] = self.line
        if self.column is not None:
            out["column"] = self.column
        return out

    def __str__(self) -> str:
        where = self.file + (f":{self.line}" if self.line else "") + (f" {self.field}" if self.field else "")
        return f"{where}: {self.message}"


class PackInvalid(Exception):
    def __init__(self, problems: list[Problem]):
        super().__init__(f"the content pack has {len(problems)} problem(s)")
        self.problems = problems


@dataclass
class ValidPack:
    name: str
    version: str
    content: dict[str, Any]  # products, scripts, posters, trainings; templates and Markdown inlined
    files: dict[str, bytes]  # pictures and fonts the content names, by path
    sha256: str
    size_bytes: int

    def counts(self) -> dict[str, int]:
        return {k: len(self.content[k]) for k in ("products", "scripts", "posters", "trainings")}


# ---- field specs: key -> (required, kind) -------------------------------------------------------
_STR, _INT, _LIST_STR, _PATH, _TABLE, _LIST_TABLE, _VERSION_T = "str", "int", "list", "path", "table", "tables", "ver"
_ARRAY = "array"
SPECS: dict[str, dict[str, tuple[bool, str]]] = {
    "root": {"pack": (True, _TABLE), "products": (False, _ARRAY), "scripts": (False, _ARRAY),
             "posters": (False, _ARRAY), "trainings": (False, _ARRAY)},
    "pack": {"name": (True, _STR), "version": (True, _VERSION_T), "description": (False, _STR)},
    "products": {"sku": (True, _STR), "name": (True, _STR), "price_fen": (True, _INT),
                 "selling_points": (False, _LIST_STR), "image": (False, _PATH), "url": (False, _STR)},
    "scripts": {"key": (True, _STR), "sku": (False, _STR), "title": (True, _STR), "template": (True, _PATH)},
    "posters": {"key": (True, _STR), "title": (False, _STR), "sku": (False, _STR), "background": (True, _PATH),
                "qr": (True, _TABLE), "texts": (False, _LIST_TABLE), "font": (False, _PATH)},
    "qr": {"x": (True, _INT), "y": (True, _INT), "size": (True, _INT)},
    "texts": {"template": (True, _STR), "x": (True, _INT), "y": (True, _INT), "size": (True, _INT),
              "color": (False, _STR), "max_width": (False, _INT), "align": (False, _STR),
              "weight": (False, _STR), "font": (False, _PATH)},
    "trainings": {"key": (True, _STR), "title": (True, _STR), "body": (True, _PATH), "ranks": (False, _LIST_STR),
                  "summary": (False, _STR)},
}
_KIND_TEXT = {_STR: "a string", _INT: "a whole number", _LIST_STR: "a list of strings", _PATH: "a file path",
              _TABLE: "a table", _LIST_TABLE: "a list of tables", _VERSION_T: "a string",
              _ARRAY: "an array of tables ([[...]])"}


def _type_ok(value: Any, kind: str) -> bool:
    if kind in (_STR, _PATH):
        return isinstance(value, str) and value.strip() != ""
    if kind == _VERSION_T:
        return (isinstance(value, str) and value.strip() != "") or (isinstance(value, int) and not isinstance(value, bool))
    if kind == _INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == _LIST_STR:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind == _TABLE:
        return isinstance(value, dict)
    if kind == _LIST_TABLE:
        return isinstance(value, list) and all(isinstance(v, dict) for v in value)
    if kind == _ARRAY:
        return isinstance(value, list)
    raise AssertionError(kind)


class _Checker:
    """Collects every problem of one pack."""

    def __init__(self, zf: SafeZip, rank_keys: Collection[str] | None):
        self.zf = zf
        self.rank_keys = rank_keys
        self.problems: list[Problem] = []
        self.files: dict[str, bytes] = {}
        self._images: dict[str, tuple[int, int] | None] = {}
        self._fonts: dict[str, bool] = {}

    def problem(self, field_: str, message: str, file: str = MANIFEST, line: int | None = None) -> None:
        self.problems.append(Problem(file, field_, message, line))

    def table(self, data: Any, spec: str, where: str) -> tuple[dict[str, Any], bool]:
        """(the well-typed known keys of the table, whether the table is wholly right). Every
        problem is reported; callers go on checking what is usable, so all show at once."""
        if not isinstance(data, dict):
            self.problem(where, "must be a table")
            return {}, False
        ok = True
        values: dict[str, Any] = {}
        for key in data:
            if key not in SPECS[spec]:
                self.problem(f"{where}.{key}" if where else key,
                             f"unknown key {key!r}; allowed: {', '.join(SPECS[spec])}")
                ok = False
        for key, (required, kind) in SPECS[spec].items():
            name = f"{where}.{key}" if where else key
            if key not in data:
                if required:
                    self.problem(name, f"missing required key {key!r}")
                    ok = False
            elif not _type_ok(data[key], kind):
                self.problem(name, f"must be {_KIND_TEXT[kind]}" + (" (not empty)" if kind in (_STR, _PATH) else ""))
                ok = False
            else:
                values[key] = data[key]
        return values, ok

    def member(self, path: str, where: str) -> str | None:
        norm = normalise(path)
        if norm is None:
            self.problem(where, f"path {path!r} must be relative to the zip root, without '..'")
            return None
        if not self.zf.has(norm):
            self.problem(where, f"names {path!r}, which is not in the zip")
            return None
        return norm

    def text_file(self, path: str, where: str, limit: int = MAX_TEXT_BYTES) -> tuple[str, str] | None:
        norm = self.member(path, where)
        if norm is None:
            return None
        if self.zf.size(norm) > limit:
            self.problem(where, f"is larger than {limit // 1024} KiB", file=norm)
            return None
        try:
            return norm, self.zf.read(norm).decode("utf-8-sig")
        except ValueError as e:
            self.problem(where, str(e) if not isinstance(e, UnicodeDecodeError) else "is not UTF-8 text", file=norm)
            return None

    def image(self, path: str, where: str) -> tuple[str, tuple[int, int]] | None:
        norm = self.member(path, where)
        if norm is None:
            return None
        if norm not in self._images:
            self._images[norm] = None
            if self.zf.size(norm) > 10 * 1024 * 1024:
                self.problem(where, f"is {self.zf.size(norm) / 1048576:.1f} MB; pictures may be at most 10 MB",
                             file=norm)
            else:
                try:
                    data = self.zf.read(norm)
                    with open_image(data) as img:
                        self._images[norm] = img.size
                    self.files[norm] = data
                except (ValueError, BadImage) as e:
                    self.problem(where, str(e), file=norm)
        size = self._images[norm]
        return (norm, size) if size is not None else None

    def font(self, path: str, where: str) -> str | None:
        norm = self.member(path, where)
        if norm is None:
            return None
        if norm not in self._fonts:
            self._fonts[norm] = False
            if self.zf.size(norm) > MAX_FONT_BYTES:
                self.problem(where, f"is larger than {MAX_FONT_BYTES // 1048576} MB", file=norm)
            else:
                try:
                    data = self.zf.read(norm)
                    ImageFont.truetype(io.BytesIO(data), 24)
                    self.files[norm] = data
                    self._fonts[norm] = True
                except (ValueError, OSError):
                    self.problem(where, "is not a TrueType/OpenType font Pillow can load", file=norm)
        return norm if self._fonts[norm] else None

    def template(self, source: str, where: str, file: str, product: dict[str, Any] | None) -> bool:
        try:
            templating.check(source)
            templating.render(source, templating.sample_variables(product))
        except templating.PackTemplateError as e:
            msg = e.message
            if product is None and "'product' is undefined" in msg:
                msg = "uses product but has no sku; add sku = \"...\" or drop product.*"
            # A template file's line; inline templates (poster texts) live inside manifest.toml.
            self.problem(where, f"template error: {msg}", file=file, line=e.line if file != MANIFEST else None)
            return False
        return True

    def unique(self, items: list[tuple[int, str]], section: str, key: str) -> None:
        seen: dict[str, int] = {}
        for i, value in items:
            low = value.lower()
            if low in seen:
                self.problem(f"{section}[{i}].{key}", f"duplicate {key} {value!r} (also {section}[{seen[low]}])")
            else:
                seen[low] = i


def validate_pack(path: str | Path, rank_keys: Collection[str] | None = None) -> ValidPack:
    """The checked pack, or PackInvalid listing every problem. Nothing is written anywhere."""
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_UPLOAD_BYTES:
        raise PackInvalid([Problem("(zip)", "", f"is {size / 1048576:.1f} MiB; packs may be at most 50 MiB")])
    try:
        zf = SafeZip(path)
    except UnsafeZip as e:
        raise PackInvalid([Problem(p.member, "", p.message) for p in e.problems]) from None
    with zf:
        checker = _Checker(zf, rank_keys)
        content = _check_manifest(checker)
        if checker.problems or content is None:
            raise PackInvalid(checker.problems)
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        name, version = content.pop("pack")
        return ValidPack(name, version, content, checker.files, digest.hexdigest(), size)


def _check_manifest(c: _Checker) -> dict[str, Any] | None:
    if not c.zf.has(MANIFEST):
        nested = [n for n in c.zf.names if n.endswith("/" + MANIFEST)]
        hint = f"; found {nested[0]} — zip the folder's contents, not the folder" if nested else ""
        c.problem("", "the zip has no manifest.toml at its root" + hint)
        return None
    found = c.text_file(MANIFEST, "", limit=MAX_TEXT_BYTES)
    if found is None:
        return None
    try:
        data = tomllib.loads(found[1])
    except tomllib.TOMLDecodeError as e:
        m = _TOML_POS.search(str(e))
        c.problems.append(Problem(MANIFEST, "", f"TOML syntax error: {_TOML_POS.sub('', str(e)).strip()}",
                                  int(m.group(1)) if m else None, int(m.group(2)) if m else None))
        return None
    c.table(data, "root", "")
    pack = c.table(data["pack"], "pack", "pack")[0] if isinstance(data.get("pack"), dict) else {}
    name, version = str(pack.get("name", "")).strip(), str(pack.get("version", "")).strip()
    if "name" in pack and not _NAME.match(name):
        c.problem("pack.name", "must be 1–64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    if "version" in pack and not _VERSION.match(version):
        c.problem("pack.version", "must be 1–32 letters, digits, '.', '_', '+' or '-'")
    sections = {s: data.get(s) if isinstance(data.get(s), list) else []
                for s in ("products", "scripts", "posters", "trainings")}
    products = _products(c, sections["products"])
    # Every product with a usable sku, also one with other problems, so that scripts and posters
    # naming it are checked against it rather than told it does not exist.
    by_sku = {p["sku"].lower(): {"sku": p["sku"], "name": _text(p.get("name")), "price_fen": _int(p.get("price_fen")),
                                 "selling_points": [x for x in p.get("selling_points", []) if isinstance(x, str)]
                                 if isinstance(p.get("selling_points"), list) else [], "url": None}
              for p in sections["products"] if isinstance(p, dict) and isinstance(p.get("sku"), str)}
    content = {
        "pack": (name, version),
        "products": products,
        "scripts": _scripts(c, sections["scripts"], by_sku),
        "posters": _posters(c, sections["posters"], by_sku),
        "trainings": _trainings(c, sections["trainings"]),
    }
    if not any(content[s] for s in ("products", "scripts", "posters", "trainings")) and not c.problems:
        c.problem("", "the pack has no products, scripts, posters or trainings")
    return content


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _key_ok(c: _Checker, t: dict[str, Any], name: str, where: str) -> bool:
    value = t.get(name)
    if value is not None and not _KEY.match(value):
        c.problem(f"{where}.{name}", f"{name} {value!r} must be 1–64 letters, digits, '.', '_' or '-'")
        return False
    return value is not None


def _sku_ref(c: _Checker, t: dict[str, Any], where: str,
             by_sku: dict[str, dict[str, Any]]) -> tuple[dict[str, Any] | None, bool]:
    """(the product the table names, whether its sku (if any) is right)."""
    sku = t.get("sku")
    if sku is None:
        return None, True
    product = by_sku.get(sku.lower())
    if product is None:
        c.problem(f"{where}.sku", f"names SKU {sku!r}, which is not among the products")
    return product, product is not None


def _keys(items: list[Any], key: str) -> list[tuple[int, str]]:
    return [(i, x[key]) for i, x in enumerate(items) if isinstance(x, dict) and isinstance(x.get(key), str)]


def _products(c: _Checker, items: list[Any]) -> list[dict[str, Any]]:
    out = []
    for i, raw in enumerate(items):
        where = f"products[{i}]"
        t, ok = c.table(raw, "products", where)
        ok = _key_ok(c, t, "sku", where) and ok
        if t.get("price_fen", 0) < 0:
            c.problem(f"{where}.price_fen", "must not be negative (integer fen: 12900 = ¥129.00)")
            ok = False
        url = t.get("url")
        if url is not None and not url.startswith(("https://", "http://")):
            c.problem(f"{where}.url", "must start with https:// or http://")
            ok = False
        image = c.image(t["image"], f"{where}.image") if "image" in t else None
        ok = ok and ("image" not in t or image is not None)
        if ok:
            out.append({"sku": t["sku"], "name": t["name"], "price_fen": t["price_fen"],
                        "selling_points": list(t.get("selling_points", [])), "image": image[0] if image else None,
                        "url": url})
    c.unique(_keys(items, "sku"), "products", "sku")
    return out


def _scripts(c: _Checker, items: list[Any], by_sku: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for i, raw in enumerate(items):
        where = f"scripts[{i}]"
        t, ok = c.table(raw, "scripts", where)
        ok = _key_ok(c, t, "key", where) and ok
        product, sku_ok = _sku_ref(c, t, where, by_sku)
        found = c.text_file(t["template"], f"{where}.template") if "template" in t else None
        if found is None:
            continue
        file, source = found
        sample = product_variables(product) if product else None
        if "sku" in t and product is None:  # the sku is wrong: still check the template's syntax
            sample = product_variables({"sku": t["sku"], "name": "", "price_fen": 0})
        if c.template(source, f"{where}.template", file, sample) and ok and sku_ok:
            out.append({"key": t["key"], "sku": product["sku"] if product else None, "title": t["title"],
                        "template": source, "file": file})
    c.unique(_keys(items, "key"), "scripts", "key")
    return out


def _posters(c: _Checker, items: list[Any], by_sku: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for i, raw in enumerate(items):
        where = f"posters[{i}]"
        t, ok = c.table(raw, "posters", where)
        ok = _key_ok(c, t, "key", where) and ok
        product, sku_ok = _sku_ref(c, t, where, by_sku)
        bg = c.image(t["background"], f"{where}.background") if "background" in t else None
        font = c.font(t["font"], f"{where}.font") if "font" in t else None
        ok = ok and sku_ok and bg is not None and ("font" not in t or font is not None)
        size = bg[1] if bg else None
        qr, qr_ok = c.table(t["qr"], "qr", f"{where}.qr") if "qr" in t else ({}, False)
        if qr_ok and qr["size"] < MIN_QR_SIZE:
            c.problem(f"{where}.qr.size", f"is {qr['size']} px; a QR code needs at least {MIN_QR_SIZE} px to scan")
            qr_ok = False
        elif qr_ok and size is not None:
            w, h = size
            if not (0 <= qr["x"] and 0 <= qr["y"] and qr["x"] + qr["size"] <= w and qr["y"] + qr["size"] <= h):
                c.problem(f"{where}.qr", f"box ({qr['x']}, {qr['y']}) size {qr['size']} is outside the "
                                         f"{w}×{h} background")
                qr_ok = False
        texts = [_poster_text(c, raw_text, f"{where}.texts[{j}]", size, product)
                 for j, raw_text in enumerate(t.get("texts", []))]
        if ok and qr_ok and all(x is not None for x in texts):
            assert bg is not None
            out.append({"key": t["key"], "title": t.get("title") or t["key"], "sku": product["sku"] if product else None,
                        "background": bg[0], "width": bg[1][0], "height": bg[1][1], "font": font,
                        "qr": {"x": qr["x"], "y": qr["y"], "size": qr["size"]}, "texts": texts})
    c.unique(_keys(items, "key"), "posters", "key")
    return out


def _poster_text(c: _Checker, raw: Any, where: str, bg: tuple[int, int] | None,
                 product: dict[str, Any] | None) -> dict[str, Any] | None:
    """The checked text box; the box is checked against the background when that is usable."""
    t, ok = c.table(raw, "texts", where)
    color = t.get("color", "#333333")
    try:
        ImageColor.getrgb(color)
    except ValueError:
        c.problem(f"{where}.color", f"{color!r} is not a colour; use #RRGGBB")
        ok = False
    if not 8 <= t.get("size", 8) <= 400:
        c.problem(f"{where}.size", "must be between 8 and 400 pixels")
        ok = False
    align = t.get("align", "left")
    if align not in ALIGNS:
        c.problem(f"{where}.align", f"must be one of {', '.join(ALIGNS)}")
        ok = False
    weight = t.get("weight", "Regular")
    if weight not in WEIGHTS:
        c.problem(f"{where}.weight", f"must be one of {', '.join(WEIGHTS)}")
        ok = False
    max_width = t.get("max_width")
    if ok and bg is not None:
        (w, h), x, y, size = bg, t["x"], t["y"], t["size"]
        if max_width is None:
            max_width = {"left": w - x, "center": 2 * min(x, w - x), "right": x}[align]
        left = {"left": x, "center": x - max_width / 2, "right": x - max_width}[align]
        if not (0 <= x <= w and 0 <= y and y + size <= h):
            c.problem(where, f"text box at ({x}, {y}) size {size} is outside the {w}×{h} background")
            ok = False
        elif max_width <= 0 or left < 0 or left + max_width > w:
            c.problem(f"{where}.max_width", f"text box from x={left:.0f} to {left + max_width:.0f} leaves the "
                                            f"{w}-pixel-wide background")
            ok = False
    font = c.font(t["font"], f"{where}.font") if "font" in t else None
    ok = ok and ("font" not in t or font is not None)
    if "template" in t:
        ok = c.template(t["template"], f"{where}.template", MANIFEST,
                        product_variables(product) if product else None) and ok
    if not ok or bg is None:
        return None
    return {"template": t["template"], "x": t["x"], "y": t["y"], "size": t["size"], "color": color,
            "max_width": int(max_width), "align": align, "weight": weight, "font": font}


def _trainings(c: _Checker, items: list[Any]) -> list[dict[str, Any]]:
    out = []
    for i, raw in enumerate(items):
        where = f"trainings[{i}]"
        t, ok = c.table(raw, "trainings", where)
        ok = _key_ok(c, t, "key", where) and ok
        ranks = t.get("ranks")
        if ranks is not None and c.rank_keys is not None:
            unknown = [r for r in ranks if r not in c.rank_keys]
            if unknown:
                c.problem(f"{where}.ranks", f"unknown rank {unknown[0]!r}; configured ranks: "
                                            f"{', '.join(c.rank_keys)}")
                ok = False
        found = c.text_file(t["body"], f"{where}.body") if "body" in t else None
        if found is None:
            continue
        file, body = found
        _, pictures = markdown_html(body, base=file.rsplit("/", 1)[0] if "/" in file else "")
        for pic in pictures:
            ok = c.image(pic, f"{where}.body") is not None and ok
        if ok:
            out.append({"key": t["key"], "title": t["title"], "summary": t.get("summary", ""), "body": body,
                        "file": file, "ranks": list(ranks) if ranks is not None else None})
    c.unique(_keys(items, "key"), "trainings", "key")
    return out
