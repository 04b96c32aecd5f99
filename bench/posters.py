"""Poster rendering speed and memory against a bare Pillow + qrcode render of the same poster.

    .venv/bin/python bench/posters.py [--posters 200] [--threads 2]

On the demo pack's 1080×1920 background, for N distinct distributors (a name, a code, a QR url
each), timed in the same run, interleaved so that machine noise hits both alike:
  bare  — background.copy(), qrcode.make(url) resized and pasted, JPEG quality 85: the least a
          poster costs (no text);
  cold  — distbot's whole path for a new distributor: the pack's text templates in the Jinja
          sandbox, the cache key, PosterRenderer.render (QR code, CJK text with Noto Sans SC,
          JPEG ≤ 2 MB, through asyncio.to_thread);
then
  warm  — the same N again: templates, cache key, a cache hit.
Also the throughput of N cold posters requested at once (renders share `--threads` threads),
and the process's peak memory (ru_maxrss). Targets: cold ≤ 2.5× bare, warm ≤ 1 ms, peak ≤ 300 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import random
import resource
import secrets
import statistics
import sys
import time
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import qrcode  # noqa: E402
from PIL import Image  # noqa: E402

from content.demo import HERE as DEMO_DIR, pictures  # noqa: E402
from content.posters import PosterJob, PosterRenderer, TextBox, cache_key, decode_background  # noqa: E402
from content.templating import render_template as render, template_variables  # noqa: E402

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英"


def distributors(n: int) -> list[tuple[str, str, str]]:
    rnd = random.Random(7)
    return [(rnd.choice(SURNAMES) + "".join(rnd.choice(GIVEN) for _ in range(rnd.choice((1, 2)))),
             "".join(rnd.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(6)),
             "http://weixin.qq.com/q/" + secrets.token_urlsafe(16)) for _ in range(n)]


def bare_render(background: Image.Image, url: str, x: int, y: int, size: int) -> bytes:
    img = background.copy()
    img.paste(qrcode.make(url).get_image().convert("RGB").resize((size, size)), (x, y))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def ms(values: list[float]) -> str:
    return f"mean {statistics.mean(values) * 1000:6.2f} ms   median {statistics.median(values) * 1000:6.2f} ms"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posters", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    manifest = tomllib.loads((DEMO_DIR / "manifest.toml").read_text(encoding="utf-8"))
    poster = next(p for p in manifest["posters"] if p["key"] == "default")
    bg_bytes = pictures()[poster["background"]]
    background = decode_background(bg_bytes)
    qr = poster["qr"]
    texts = poster["texts"]
    people = distributors(args.posters)
    renderer = PosterRenderer(threads=args.threads)
    digest = "bench"

    async def load(ref: tuple[int, str, str]) -> bytes:
        return bg_bytes

    def job_for(name: str, code: str, url: str) -> tuple[str, PosterJob]:
        variables = template_variables("http://127.0.0.1:8080", name, code, None)
        boxes = tuple(TextBox(render(t["template"], variables), t["x"], t["y"], t["size"], t.get("color", "#333333"),
                              t.get("max_width", 1080 - t["x"]), t.get("align", "left"), t.get("weight", "Regular"))
                      for t in texts)
        key = cache_key(digest, "default", name, code, url, [b.text for b in boxes])
        return key, PosterJob((0, digest, poster["background"]), url, qr["x"], qr["y"], qr["size"], boxes)

    async def poster_for(name: str, code: str, url: str) -> bytes:
        key, job = job_for(name, code, url)
        return await renderer.render(key, job, load)

    # Warm-up: fonts, the background cache, the thread pool, the JPEG encoder.
    await poster_for("热身", "WARMUP", "http://weixin.qq.com/q/warmup")
    bare_render(background, "http://weixin.qq.com/q/warmup", qr["x"], qr["y"], qr["size"])

    bare, cold, sizes = [], [], []
    for name, code, url in people:
        t0 = time.perf_counter()
        bare_render(background, url, qr["x"], qr["y"], qr["size"])
        t1 = time.perf_counter()
        jpeg = await poster_for(name, code, url)
        t2 = time.perf_counter()
        bare.append(t1 - t0)
        cold.append(t2 - t1)
        sizes.append(len(jpeg))
    renders = renderer.renders
    warm = []
    for name, code, url in people:
        t0 = time.perf_counter()
        await poster_for(name, code, url)
        warm.append(time.perf_counter() - t0)
    assert renderer.renders == renders, "warm posters must not render"

    burst = PosterRenderer(threads=args.threads, cache_bytes=0)
    burst._backgrounds = renderer._backgrounds  # the background is decoded once per process anyway
    fresh = distributors(args.posters)
    t0 = time.perf_counter()
    await asyncio.gather(*(burst.render(*job_for(n, c, u + "x"), load) for n, c, u in fresh))
    burst_s = time.perf_counter() - t0

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ratio = statistics.mean(cold) / statistics.mean(bare)
    print(f"posters: {args.posters} distinct distributors, 1080×1920 background, {os.cpu_count()} CPUs, "
          f"{args.threads} render threads")
    print(f"bare Pillow + qrcode (no text) {ms(bare)}")
    print(f"cold distbot poster            {ms(cold)}   = {ratio:.2f}× bare (target ≤ 2.5×)")
    print(f"warm distbot poster            {ms(warm)}   (target ≤ 1 ms)")
    print(f"cold, {args.posters} at once            {burst_s / args.posters * 1000:6.2f} ms per poster "
          f"({args.posters / burst_s:.0f} posters/s)")
    print(f"JPEG size                      mean {statistics.mean(sizes) / 1024:.0f} KiB, max {max(sizes) / 1024:.0f} KiB "
          f"(limit 2048 KiB)")
    print(f"cache                          {renderer.stats()}")
    print(f"peak memory (ru_maxrss)        {peak_mb:.0f} MB (target ≤ 300 MB)")


if __name__ == "__main__":
    asyncio.run(main())
