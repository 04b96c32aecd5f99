"""The content-pack checker: the manifest's field specs and the collector of problems that
content.packs.validate_pack fills (every problem at once, each naming the file and the field)."""

from __future__ import annotations

import io
import re
import tomllib
from collections.abc import Collection
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any

from PIL import ImageFont

from content import templating
from content.images import BadImage, open_image
from content.safezip import SafeZip, normalise
from domain.catalogue import KIND_NAMES, PACK, say
from domain.config_sections import LEGAL_MAX_LEVELS
from domain.formats import storable

MANIFEST = "manifest.toml"
MAX_UPLOAD_BYTES = 50 * 1024 * 1024
MAX_TEXT_BYTES = 1024 * 1024
MAX_FONT_BYTES = 32 * 1024 * 1024
MIN_QR_SIZE = 90
WEIGHTS = ("Thin", "ExtraLight", "Light", "Regular", "Medium", "SemiBold", "Bold", "ExtraBold", "Black")
ALIGNS = ("left", "center", "right")

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,31}$")
KEY_RE = re.compile(r"^\w[\w.-]{0,63}$")
TOML_POS = re.compile(r"\(at line (\d+), column (\d+)\)")
# RFC 3339 as a string; the zone is optional here only to tell "no zone" apart from "not a date-time".
RFC3339_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2}(?:\.\d+)?)([Zz]|[+-]\d{2}:\d{2})?$")
MOMENT_EXAMPLE = "2026-12-24T00:00:00+08:00"


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
    live_from: datetime | None = None  # the window in which this version is live (aware)
    live_until: datetime | None = None
    announce: str | None = None  # sent to every active distributor as the version goes live

    def counts(self) -> dict[str, int]:
        return {k: len(self.content[k]) for k in ("products", "scripts", "posters", "trainings")}

    def sku_rates(self) -> dict[str, list[str]] | None:
        """The products' own rates by lower-case SKU (content_packs.sku_rates), None when none has any."""
        rates = {p["sku"].lower(): p["rates"] for p in self.content["products"] if p.get("rates") is not None}
        return rates or None


# ---- field specs: key -> (required, kind) -------------------------------------------------------
_STR, _INT, _LIST_STR, _PATH, _TABLE, _LIST_TABLE, _VERSION_T = "str", "int", "list", "path", "table", "tables", "ver"
_ARRAY, _MOMENT, _RATES = "array", "moment", "rates"
SPECS: dict[str, dict[str, tuple[bool, str]]] = {
    "root": {"pack": (True, _TABLE), "products": (False, _ARRAY), "scripts": (False, _ARRAY),
             "posters": (False, _ARRAY), "trainings": (False, _ARRAY)},
    "pack": {"name": (True, _STR), "version": (True, _VERSION_T), "description": (False, _STR),
             "live_from": (False, _MOMENT), "live_until": (False, _MOMENT), "announce": (False, _STR)},
    "products": {"sku": (True, _STR), "name": (True, _STR), "price_fen": (True, _INT),
                 "selling_points": (False, _LIST_STR), "image": (False, _PATH), "url": (False, _STR),
                 "details": (False, _TABLE), "buy_url": (False, _STR), "rates": (False, _RATES)},
    "scripts": {"key": (True, _STR), "sku": (False, _STR), "title": (True, _STR), "template": (True, _PATH),
                "ranks": (False, _LIST_STR)},
    "posters": {"key": (True, _STR), "title": (False, _STR), "sku": (False, _STR), "background": (True, _PATH),
                "qr": (True, _TABLE), "texts": (False, _LIST_TABLE), "font": (False, _PATH),
                "ranks": (False, _LIST_STR)},
    "qr": {"x": (True, _INT), "y": (True, _INT), "size": (True, _INT)},
    "texts": {"template": (True, _STR), "x": (True, _INT), "y": (True, _INT), "size": (True, _INT),
              "color": (False, _STR), "max_width": (False, _INT), "align": (False, _STR),
              "weight": (False, _STR), "font": (False, _PATH)},
    "trainings": {"key": (True, _STR), "title": (True, _STR), "body": (True, _PATH), "ranks": (False, _LIST_STR),
                  "summary": (False, _STR)},
}
_KIND_TEXT = {kind: text.format(example=MOMENT_EXAMPLE) for kind, text in KIND_NAMES.items()}


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
    if kind == _RATES:
        return isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    if kind == _MOMENT:  # a string or any TOML date/time; Checker.moment says what is wrong with it
        return isinstance(value, (str, date, time))
    raise AssertionError(kind)


class Checker:
    """Collects every problem of one pack."""

    def __init__(self, zf: SafeZip, rank_keys: Collection[str] | None, max_levels: int = LEGAL_MAX_LEVELS):
        self.zf = zf
        self.rank_keys = rank_keys
        self.max_levels = max_levels  # a product's rates go no deeper (distribution.max_levels)
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
            self.problem(where, say(PACK, "not_table"))
            return {}, False
        ok = True
        values: dict[str, Any] = {}
        for key in data:
            if key not in SPECS[spec]:
                self.problem(f"{where}.{key}" if where else key,
                             say(PACK, "unknown_key", key=key, allowed=", ".join(SPECS[spec])))
                ok = False
        for key, (required, kind) in SPECS[spec].items():
            name = f"{where}.{key}" if where else key
            if key not in data:
                if required:
                    self.problem(name, say(PACK, "missing_key", key=key))
                    ok = False
            elif not _type_ok(data[key], kind):
                self.problem(name, say(PACK, "wrong_kind", kind=_KIND_TEXT[kind])
                             + (say(PACK, "not_empty") if kind in (_STR, _PATH) else ""))
                ok = False
            else:
                values[key] = data[key]
        return values, ok

    def _in_utc(self, at: datetime, where: str) -> datetime | None:
        """`at`, or None and a problem when it has no UTC time (0001-01-01T00:00+08:00)."""
        if storable(at):
            return at
        self.problem(where, say(PACK, "not_a_time", value=at.isoformat()))
        return None

    def moment(self, value: str | date | time, where: str) -> datetime | None:
        """An aware datetime from a TOML offset date-time or an RFC 3339 string. Local (zone-less)
        times are refused: the server's zone must not decide when a festival starts."""
        if isinstance(value, datetime) and value.tzinfo is not None:
            return self._in_utc(value, where)
        zoned = value
        if isinstance(value, str):
            m = RFC3339_RE.match(value.strip())
            if m is None:
                self.problem(where, say(PACK, "not_rfc3339", value=value, example=MOMENT_EXAMPLE))
                return None
            day, clock, zone = m.groups()
            try:
                zoned = datetime.fromisoformat(f"{day}T{clock}{'+00:00' if zone in ('Z', 'z') else zone or ''}")
            except ValueError:
                self.problem(where, say(PACK, "not_a_time", value=value))
                return None
            if zone is not None:
                return self._in_utc(zoned, where)
        what = ("zoneless_datetime" if isinstance(zoned, datetime) else "zoneless_date" if isinstance(zoned, date)
                else "zoneless_time")
        self.problem(where, say(PACK, "no_zone", what=say(PACK, what), example=MOMENT_EXAMPLE))
        return None

    def member(self, path: str, where: str) -> str | None:
        norm = normalise(path)
        if norm is None:
            self.problem(where, say(PACK, "path_outside", path=path))
            return None
        if not self.zf.has(norm):
            self.problem(where, say(PACK, "not_in_zip", path=path))
            return None
        return norm

    def text_file(self, path: str, where: str, limit: int = MAX_TEXT_BYTES) -> tuple[str, str] | None:
        norm = self.member(path, where)
        if norm is None:
            return None
        if self.zf.size(norm) > limit:
            self.problem(where, say(PACK, "text_too_large", kib=limit // 1024), file=norm)
            return None
        try:
            return norm, self.zf.read(norm).decode("utf-8-sig")
        except ValueError as e:
            self.problem(where, str(e) if not isinstance(e, UnicodeDecodeError) else say(PACK, "not_utf8"), file=norm)
            return None

    def image(self, path: str, where: str) -> tuple[str, tuple[int, int]] | None:
        norm = self.member(path, where)
        if norm is None:
            return None
        if norm not in self._images:
            self._images[norm] = None
            if self.zf.size(norm) > 10 * 1024 * 1024:
                self.problem(where, say(PACK, "image_too_large", mb=self.zf.size(norm) / 1048576), file=norm)
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
                self.problem(where, say(PACK, "font_too_large", mb=MAX_FONT_BYTES // 1048576), file=norm)
            else:
                try:
                    data = self.zf.read(norm)
                    ImageFont.truetype(io.BytesIO(data), 24)
                    self.files[norm] = data
                    self._fonts[norm] = True
                except (ValueError, OSError):
                    self.problem(where, say(PACK, "not_font"), file=norm)
        return norm if self._fonts[norm] else None

    def template(self, source: str, where: str, file: str, product: dict[str, Any] | None) -> bool:
        try:
            templating.check(source)
            templating.render_template(source, templating.sample_variables(product))
        except templating.PackTemplateError as e:
            msg = e.message
            if product is None and "'product' is undefined" in msg:
                msg = say(PACK, "product_without_sku")
            # A template file's line; inline templates (poster texts) live inside manifest.toml.
            self.problem(where, say(PACK, "template_error", detail=msg), file=file, line=e.line if file != MANIFEST else None)
            return False
        return True

    def unique(self, items: list[tuple[int, str]], section: str, key: str) -> None:
        seen: dict[str, int] = {}
        for i, value in items:
            low = value.lower()
            if low in seen:
                self.problem(f"{section}[{i}].{key}", say(PACK, "duplicate", key=key, value=value, section=section,
                                                          other=seen[low]))
            else:
                seen[low] = i


BARE_KEY = re.compile(r"([{,]\s*|^\s*)([^\s\"'=.{},\[\]#]+)(?=\s*=)", re.MULTILINE)
MAX_QUOTED_KEYS = 200


def load_toml(text: str) -> dict[str, Any]:
    """The manifest's TOML, with each unquoted key that TOML refuses for its Chinese letters read
    as quoted: `details = {产地 = "新疆若羌"}` (CONTRACT §6 writes it so) reads as
    `{"产地" = "新疆若羌"}`. Only where the parser stops at such a key, so strings and valid TOML are
    never touched; any other error is tomllib's TOMLDecodeError."""
    for _ in range(MAX_QUOTED_KEYS):
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            quoted = _quote_key_at(text, e)
            if quoted is None:
                raise
            text = quoted
    return tomllib.loads(text)


def _quote_key_at(text: str, error: tomllib.TOMLDecodeError) -> str | None:
    """The text with the Chinese key the parser stopped at quoted, or None when it stopped elsewhere."""
    m = TOML_POS.search(str(error))
    lines = text.split("\n")
    if m is None or not 0 < int(m.group(1)) <= len(lines):
        return None
    line_no, column = int(m.group(1)), int(m.group(2))
    line = lines[line_no - 1]
    key = next((k for k in BARE_KEY.finditer(line) if k.start(2) <= column - 1 < k.end(2) and not k.group(2).isascii()),
               None)
    if key is None:
        return None
    lines[line_no - 1] = f'{line[:key.start(2)]}"{key.group(2)}"{line[key.end(2):]}'
    return "\n".join(lines)
