"""Screenshots of every tab of the app on an index (default: the demo's indexes/samples) into docs/screenshots/.

    .venv/bin/python scripts/app_screenshots.py [--index indexes/samples] [--query FILE] [--out docs/screenshots]

Starts the app on a free loopback port, drives Debian's chromium (/usr/bin/chromium) through Playwright,
and writes search.png, duplicates.png, dictionary.png and index.png as palette PNGs (small files)."""

from __future__ import annotations

import argparse
import io
import re
import socket
from pathlib import Path

from PIL import Image
from playwright.sync_api import Page, sync_playwright

from app.config import AppConfig
from app.engine import Engine
from app.main import start

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def save(page: Page, path: Path) -> None:
    shot = Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("RGB")
    shot.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    print(f"{path}: {shot.size[0]}x{shot.size[1]}, {path.stat().st_size // 1024} KB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", default="indexes/samples")
    ap.add_argument("--query", default="samples/photos/mate-backgrounds-Aqua.jpg")
    ap.add_argument("--out", default="docs/screenshots")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    server = start(Engine.load(AppConfig(index=Path(a.index), port=free_port(), device="cpu")))
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(300_000)
            page.goto(server.url)
            page.locator("input[type=file]").first.set_input_files(a.query)
            tiles = page.locator(".readable-gallery button.thumbnail-item[aria-label^='1.00 same picture']")
            tiles.first.wait_for()
            page.wait_for_timeout(1500)  # thumbnails finish loading
            page.locator(".readable-gallery button.thumbnail-item").nth(1).click()  # a result opened large
            page.get_by_role("button", name="More like this").wait_for()
            page.wait_for_timeout(1500)
            save(page, out / "search.png")

            page.get_by_role("tab", name="Duplicates").click()
            page.get_by_role("button", name="Find duplicates").click()
            page.get_by_text(re.compile(r"\d+ groups, \d+ duplicates")).first.wait_for()
            page.wait_for_timeout(1500)
            save(page, out / "duplicates.png")

            page.get_by_role("tab", name="Dictionary look-up").click()
            page.locator("[role=tabpanel]:visible input[type=file]").first.set_input_files(a.query)
            page.get_by_text(re.compile(r"InfoNCE loss = \d")).first.wait_for()
            page.wait_for_timeout(1000)
            for y in range(0, 4000, 400):  # the galleries load their pictures lazily, as they scroll into view
                page.evaluate(f"window.scrollTo(0, {y})")
                page.wait_for_timeout(150)
            page.wait_for_function("() => [...document.images].every((i) => i.complete)")
            page.evaluate("window.scrollTo(0, 0)")
            page.wait_for_timeout(1000)
            save(page, out / "dictionary.png")

            page.get_by_role("tab", name="Index").click()
            page.get_by_text("Root:").first.wait_for()
            page.wait_for_timeout(1500)
            save(page, out / "index.png")
            browser.close()
    finally:
        server.close()


if __name__ == "__main__":
    main()
