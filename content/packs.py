"""The content-pack validator: one for the HTTP upload and `distbot content import`.

`validate_pack(path)` reads a zip (see content.safezip), checks manifest.toml and every file it
names, and returns a ValidPack, or raises PackInvalid with every problem found, each naming the
file and the field. CPU work (zip, Pillow, Jinja): call it from a thread.
"""

from __future__ import annotations

import hashlib
import tomllib
from decimal import Decimal
from collections.abc import Collection
from pathlib import Path
from typing import Any

from PIL import ImageColor

from content.pack_checker import (  # noqa: F401  (Problem, PackInvalid and ValidPack are this module's API too)
    ALIGNS,
    KEY_RE,
    MANIFEST,
    MAX_FONT_BYTES,
    MAX_TEXT_BYTES,
    MAX_UPLOAD_BYTES,
    MIN_QR_SIZE,
    NAME_RE,
    SPECS,
    TOML_POS,
    VERSION_RE,
    WEIGHTS,
    Checker,
    PackInvalid,
    Problem,
    ValidPack,
    load_toml,
)
from content.pages import markdown_html
from content.product_fields import check_buy_url, check_details
from content.safezip import SafeZip, UnsafeZip
from content.templating import product_variables
from domain.config_sections import LEGAL_MAX_LEVELS
from domain.campaigns import MAX_TEXT as MAX_ANNOUNCE  # an announcement becomes a campaign
from domain.catalogue import PACK, say


def validate_pack(path: str | Path, rank_keys: Collection[str] | None = None,
                  max_levels: int = LEGAL_MAX_LEVELS) -> ValidPack:
    """The checked pack, or PackInvalid listing every problem. Nothing is written anywhere."""
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_UPLOAD_BYTES:
        raise PackInvalid([Problem("(zip)", "", say(PACK, "pack_too_large", mib=size / 1048576))])
    try:
        zf = SafeZip(path)
    except UnsafeZip as e:
        raise PackInvalid([Problem(p.member, "", p.message) for p in e.problems]) from None
    with zf:
        checker = Checker(zf, rank_keys, max_levels)
        content = _check_manifest(checker)
        if checker.problems or content is None:
            raise PackInvalid(checker.problems)
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        head = content.pop("pack")
        return ValidPack(head["name"], head["version"], content, checker.files, digest.hexdigest(), size,
                         head["live_from"], head["live_until"], head["announce"])


def _check_manifest(c: Checker) -> dict[str, Any] | None:
    if not c.zf.has(MANIFEST):
        nested = [n for n in c.zf.names if n.endswith("/" + MANIFEST)]
        hint = say(PACK, "nested_manifest", found=nested[0]) if nested else ""
        c.problem("", say(PACK, "no_manifest") + hint)
        return None
    found = c.text_file(MANIFEST, "", limit=MAX_TEXT_BYTES)
    if found is None:
        return None
    try:
        data = load_toml(found[1])
    except tomllib.TOMLDecodeError as e:
        m = TOML_POS.search(str(e))
        line, column = (int(m.group(1)), int(m.group(2))) if m else (None, None)
        c.problems.append(Problem(MANIFEST, "", say(PACK, "toml_syntax", error=TOML_POS.sub('', str(e)).strip())
                                  + _bare_key_hint(found[1], line, column), line, column))
        return None
    c.table(data, "root", "")
    pack = c.table(data["pack"], "pack", "pack")[0] if isinstance(data.get("pack"), dict) else {}
    name, version = str(pack.get("name", "")).strip(), str(pack.get("version", "")).strip()
    if "name" in pack and not NAME_RE.match(name):
        c.problem("pack.name", say(PACK, "pack_name"))
    if "version" in pack and not VERSION_RE.match(version):
        c.problem("pack.version", say(PACK, "pack_version"))
    sections = {s: data.get(s) if isinstance(data.get(s), list) else []
                for s in ("products", "scripts", "posters", "trainings")}
    products = _products(c, sections["products"])
    # Every product with a usable sku, also one with other problems, so that scripts and posters
    # naming it are checked against it rather than told it does not exist.
    by_sku = {p["sku"].lower(): {"sku": p["sku"], "name": _text(p.get("name")), "price_fen": _int(p.get("price_fen")),
                                 "selling_points": [x for x in p.get("selling_points", []) if isinstance(x, str)]
                                 if isinstance(p.get("selling_points"), list) else [], "url": None,
                                 "details": {k: v for k, v in p["details"].items() if isinstance(v, str)}
                                 if isinstance(p.get("details"), dict) else {}}
              for p in sections["products"] if isinstance(p, dict) and isinstance(p.get("sku"), str)}
    content = {
        "pack": {"name": name, "version": version, **_window(c, pack)},
        "products": products,
        "scripts": _scripts(c, sections["scripts"], by_sku),
        "posters": _posters(c, sections["posters"], by_sku),
        "trainings": _trainings(c, sections["trainings"]),
    }
    if not any(content[s] for s in ("products", "scripts", "posters", "trainings")) and not c.problems:
        c.problem("", say(PACK, "empty_pack"))
    return content


def _bare_key_hint(text: str, line: int | None, column: int | None) -> str:
    """TOML's keys are ASCII unless quoted: say so when the error is at a Chinese key (details)."""
    lines = text.splitlines()
    if line is None or column is None or not 0 < line <= len(lines) or not 0 < column <= len(lines[line - 1]):
        return ""
    if lines[line - 1][column - 1].isascii():
        return ""
    return say(PACK, "chinese_key")


def _window(c: Checker, pack: dict[str, Any]) -> dict[str, Any]:
    """live_from, live_until (aware datetimes or None) and announce, checked."""
    live_from, live_until = (c.moment(pack[k], f"pack.{k}") if k in pack else None for k in ("live_from", "live_until"))
    if live_from is not None and live_until is not None and live_until <= live_from:
        c.problem("pack.live_until", say(PACK, "until_before_from", live_from=live_from.isoformat()))
    announce = pack.get("announce")
    if announce is not None and len(announce.strip()) > MAX_ANNOUNCE:
        c.problem("pack.announce", say(PACK, "announce_long", n=len(announce.strip()), most=MAX_ANNOUNCE))
    return {"live_from": live_from, "live_until": live_until, "announce": announce.strip() if announce else None}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _key_ok(c: Checker, t: dict[str, Any], name: str, where: str) -> bool:
    value = t.get(name)
    if value is not None and not KEY_RE.match(value):
        c.problem(f"{where}.{name}", say(PACK, "item_key", name=name, value=value))
        return False
    return value is not None


def _sku_ref(c: Checker, t: dict[str, Any], where: str,
             by_sku: dict[str, dict[str, Any]]) -> tuple[dict[str, Any] | None, bool]:
    """(the product the table names, whether its sku (if any) is right)."""
    sku = t.get("sku")
    if sku is None:
        return None, True
    product = by_sku.get(sku.lower())
    if product is None:
        c.problem(f"{where}.sku", say(PACK, "unknown_sku", sku=sku))
    return product, product is not None


def _ranks(c: Checker, t: dict[str, Any], where: str) -> tuple[list[str] | None, bool]:
    """An item's optional `ranks` (only these ranks get it), checked against the configured keys."""
    ranks = t.get("ranks")
    if ranks is None:
        return None, True
    if c.rank_keys is not None:
        unknown = [r for r in ranks if r not in c.rank_keys]
        if unknown:
            c.problem(f"{where}.ranks", say(PACK, "unknown_rank", rank=unknown[0], ranks=", ".join(c.rank_keys)))
            return None, False
    return list(ranks), True


def _keys(items: list[Any], key: str) -> list[tuple[int, str]]:
    return [(i, x[key]) for i, x in enumerate(items) if isinstance(x, dict) and isinstance(x.get(key), str)]


def _products(c: Checker, items: list[Any]) -> list[dict[str, Any]]:
    out = []
    for i, raw in enumerate(items):
        where = f"products[{i}]"
        t, ok = c.table(raw, "products", where)
        ok = _key_ok(c, t, "sku", where) and ok
        if t.get("price_fen", 0) < 0:
            c.problem(f"{where}.price_fen", say(PACK, "price_negative"))
            ok = False
        url = t.get("url")
        if url is not None and not url.startswith(("https://", "http://")):
            c.problem(f"{where}.url", say(PACK, "url_scheme"))
            ok = False
        image = c.image(t["image"], f"{where}.image") if "image" in t else None
        ok = ok and ("image" not in t or image is not None)
        sku = t.get("sku", f"#{i + 1}")
        details = check_details(c, t["details"], where, sku) if "details" in t else {}
        buy_url = check_buy_url(c, t["buy_url"], where, sku) if "buy_url" in t else None
        rates = _rates(c, t["rates"], f"{where}.rates") if "rates" in t else None
        ok = ok and details is not None and ("buy_url" not in t or buy_url is not None) \
            and ("rates" not in t or rates is not None)
        if ok:
            out.append({"sku": t["sku"], "name": t["name"], "price_fen": t["price_fen"],
                        "selling_points": list(t.get("selling_points", [])), "image": image[0] if image else None,
                        "url": url, "details": details, "buy_url": buy_url,
                        **({"rates": rates} if rates is not None else {})})
    c.unique(_keys(items, "sku"), "products", "sku")
    return out


def _rates(c: Checker, values: list[int | float], where: str) -> list[str] | None:
    """A product's own rates (depth 0, 1, 2) as exact decimal strings, or None with the problem
    reported: each at least 0 and below 1, at least one, no more than the levels configured."""
    if not 1 <= len(values) <= c.max_levels:
        c.problem(where, say(PACK, "rates_count", most=c.max_levels, n=len(values)))
        return None
    rates = [Decimal(str(v)) for v in values]
    if any(not Decimal(0) <= r < 1 for r in rates):
        c.problem(where, say(PACK, "rates_range"))
        return None
    return [str(r) for r in rates]


def _scripts(c: Checker, items: list[Any], by_sku: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for i, raw in enumerate(items):
        where = f"scripts[{i}]"
        t, ok = c.table(raw, "scripts", where)
        ok = _key_ok(c, t, "key", where) and ok
        product, sku_ok = _sku_ref(c, t, where, by_sku)
        ranks, ranks_ok = _ranks(c, t, where)
        ok = ranks_ok and ok
        found = c.text_file(t["template"], f"{where}.template") if "template" in t else None
        if found is None:
            continue
        file, source = found
        sample = product_variables(product) if product else None
        if "sku" in t and product is None:  # the sku is wrong: still check the template's syntax
            sample = product_variables({"sku": t["sku"], "name": "", "price_fen": 0})
        if c.template(source, f"{where}.template", file, sample) and ok and sku_ok:
            out.append({"key": t["key"], "sku": product["sku"] if product else None, "title": t["title"],
                        "template": source, "file": file, "ranks": ranks})
    c.unique(_keys(items, "key"), "scripts", "key")
    return out


def _posters(c: Checker, items: list[Any], by_sku: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for i, raw in enumerate(items):
        where = f"posters[{i}]"
        t, ok = c.table(raw, "posters", where)
        ok = _key_ok(c, t, "key", where) and ok
        product, sku_ok = _sku_ref(c, t, where, by_sku)
        ranks, ranks_ok = _ranks(c, t, where)
        ok = ranks_ok and ok
        bg = c.image(t["background"], f"{where}.background") if "background" in t else None
        font = c.font(t["font"], f"{where}.font") if "font" in t else None
        ok = ok and sku_ok and bg is not None and ("font" not in t or font is not None)
        size = bg[1] if bg else None
        qr, qr_ok = c.table(t["qr"], "qr", f"{where}.qr") if "qr" in t else ({}, False)
        if qr_ok and qr["size"] < MIN_QR_SIZE:
            c.problem(f"{where}.qr.size", say(PACK, "qr_small", size=qr["size"], most=MIN_QR_SIZE))
            qr_ok = False
        elif qr_ok and size is not None:
            w, h = size
            if not (0 <= qr["x"] and 0 <= qr["y"] and qr["x"] + qr["size"] <= w and qr["y"] + qr["size"] <= h):
                c.problem(f"{where}.qr", say(PACK, "qr_outside", x=qr["x"], y=qr["y"], size=qr["size"], w=w, h=h))
                qr_ok = False
        texts = [_poster_text(c, raw_text, f"{where}.texts[{j}]", size, product)
                 for j, raw_text in enumerate(t.get("texts", []))]
        if ok and qr_ok and all(x is not None for x in texts):
            assert bg is not None
            out.append({"key": t["key"], "title": t.get("title") or t["key"], "sku": product["sku"] if product else None,
                        "background": bg[0], "width": bg[1][0], "height": bg[1][1], "font": font,
                        "qr": {"x": qr["x"], "y": qr["y"], "size": qr["size"]}, "texts": texts, "ranks": ranks})
    c.unique(_keys(items, "key"), "posters", "key")
    return out


def _poster_text(c: Checker, raw: Any, where: str, bg: tuple[int, int] | None,
                 product: dict[str, Any] | None) -> dict[str, Any] | None:
    """The checked text box; the box is checked against the background when that is usable."""
    t, ok = c.table(raw, "texts", where)
    color = t.get("color", "#333333")
    try:
        ImageColor.getrgb(color)
    except ValueError:
        c.problem(f"{where}.color", say(PACK, "bad_colour", color=color))
        ok = False
    if not 8 <= t.get("size", 8) <= 400:
        c.problem(f"{where}.size", say(PACK, "text_size"))
        ok = False
    align = t.get("align", "left")
    if align not in ALIGNS:
        c.problem(f"{where}.align", say(PACK, "one_of", choices=", ".join(ALIGNS)))
        ok = False
    weight = t.get("weight", "Regular")
    if weight not in WEIGHTS:
        c.problem(f"{where}.weight", say(PACK, "one_of", choices=", ".join(WEIGHTS)))
        ok = False
    max_width = t.get("max_width")
    if ok and bg is not None:
        (w, h), x, y, size = bg, t["x"], t["y"], t["size"]
        if max_width is None:
            max_width = {"left": w - x, "center": 2 * min(x, w - x), "right": x}[align]
        left = {"left": x, "center": x - max_width / 2, "right": x - max_width}[align]
        if not (0 <= x <= w and 0 <= y and y + size <= h):
            c.problem(where, say(PACK, "text_outside", x=x, y=y, size=size, w=w, h=h))
            ok = False
        elif max_width <= 0 or left < 0 or left + max_width > w:
            c.problem(f"{where}.max_width", say(PACK, "text_too_wide", left=left, right=left + max_width, w=w))
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


def _trainings(c: Checker, items: list[Any]) -> list[dict[str, Any]]:
    out = []
    for i, raw in enumerate(items):
        where = f"trainings[{i}]"
        t, ok = c.table(raw, "trainings", where)
        ok = _key_ok(c, t, "key", where) and ok
        ranks, ranks_ok = _ranks(c, t, where)
        ok = ranks_ok and ok
        found = c.text_file(t["body"], f"{where}.body") if "body" in t else None
        if found is None:
            continue
        file, body = found
        _, pictures = markdown_html(body, base=file.rsplit("/", 1)[0] if "/" in file else "")
        for pic in pictures:
            ok = c.image(pic, f"{where}.body") is not None and ok
        if ok:
            out.append({"key": t["key"], "title": t["title"], "summary": t.get("summary", ""), "body": body,
                        "file": file, "ranks": ranks})
    c.unique(_keys(items, "key"), "trainings", "key")
    return out
