"""build_app(engine) -> gr.Blocks: the four tabs, laid out and wired. Nothing runs at import; `app.main`
launches the result with the look below (`LOOK`: theme, CSS, head). The handlers are plain functions in the tab
modules (app/*_tab.py)."""

from __future__ import annotations

from typing import Any

import gradio as gr

from app import dedup_tab, dictionary_tab, index_tab, search_tab
from app.engine import Engine

TITLE = "retrieval"

# Text at WCAG AA contrast (>= 4.5:1, tests/app/test_browser.py measures it in the page): the stock theme's
# subdued greys, slider ends, selected tab and footer fall to 1.9-2.8:1.
TEXT = "#1f2937"
SUBDUED = "#4b5563"
ACCENT = "#c2410c"  # orange-700 on white: 5.2:1
THEME_SET = {
    "body_text_color": TEXT,
    "body_text_color_subdued": SUBDUED,
    "block_label_text_color": TEXT,
    "block_title_text_color": TEXT,
    "block_info_text_color": SUBDUED,
    "input_placeholder_color": SUBDUED,
    "link_text_color": "#1d4ed8",
    "link_text_color_visited": "#6d28d9",
    "color_accent": ACCENT,
    "color_accent_soft": "#ffedd5",
    "button_primary_background_fill": ACCENT,
    "button_primary_background_fill_hover": "#9a3412",
    "button_primary_text_color": "#ffffff",
    "button_primary_border_color": ACCENT,
    "slider_color": ACCENT,
}

CSS = f"""
/* captions under result and key tiles: whole, wrapped, full contrast (stock: one line cut at ~15 characters, half
   opacity) */
.readable-gallery .caption-label {{
  opacity: 1 !important; white-space: normal !important; overflow-wrap: anywhere; max-width: 100% !important;
  left: 0; right: 0; color: {TEXT} !important; background: #ffffff !important; font-size: 12px !important;
  line-height: 1.3;
}}
.readable-gallery .thumbnail-item img {{ object-position: top; }}
/* the selected tab, the slider's range ends and the footer: dark text on light ground */
button[role="tab"][aria-selected="true"] {{ color: {ACCENT} !important; border-color: {ACCENT} !important; }}
button[role="tab"] {{ color: {TEXT} !important; }}
.min_value, .max_value, .head .min_value, .head .max_value {{ color: {SUBDUED} !important; opacity: 1 !important; }}
footer, footer a, footer button, footer span, footer div {{ color: {SUBDUED} !important; opacity: 1 !important; }}
.toast-close {{ opacity: 1 !important; }}
.progress-text, .meta-text, .meta-text-center {{ color: {SUBDUED} !important; opacity: 1 !important; }}
"""

# Gradio names every gallery tile "Thumbnail 3 of 10" and gives a picture no alt text of its own: each tile of a
# readable gallery is named by its caption (file name, score and band), which the stock tile has as its img's alt;
# the query's picture by its file's name. (Not gr.update(alt_text=...) on the query: see search_tab.show_results.)
HEAD = """
<script>
(() => {
  const name = () => {
    for (const tile of document.querySelectorAll(".readable-gallery button.thumbnail-item")) {
      const img = tile.querySelector("img");
      const caption = img ? img.getAttribute("alt") : "";
      if (caption && tile.getAttribute("aria-label") !== caption) {
        tile.setAttribute("aria-label", caption);
        tile.setAttribute("title", caption);
      }
    }
  };
  const query = () => {
    for (const img of document.querySelectorAll(".query-image img")) {
      const src = img.getAttribute("src") || "";
      const file = decodeURIComponent(src.split("?")[0].split("/").pop() || "");
      const alt = file ? `Query image: ${file}` : "Query image";
      if (img.getAttribute("alt") !== alt) img.setAttribute("alt", alt);
    }
  };
  new MutationObserver(() => { name(); query(); }).observe(document.documentElement, {
    subtree: true, childList: true, attributes: true, attributeFilter: ["aria-label", "alt", "src"],
  });
})();
</script>
"""


def look() -> dict[str, Any]:
    """The launch() arguments that give the app its look: theme, CSS and the accessible names script."""
    return {"theme": gr.themes.Default().set(**THEME_SET), "css": CSS, "head": HEAD}


def build_app(engine: Engine) -> gr.Blocks:
    cfg = engine.cfg
    with gr.Blocks(
        title=TITLE,
        analytics_enabled=False,
        delete_cache=(cfg.cache_sweep_s, cfg.cache_age_s),
    ) as blocks:
        gr.Markdown(f"## {TITLE}: {len(engine.index)} images under `{engine.root}`")
        with gr.Tab("Search"):
            search_tab.build(engine)
        with gr.Tab("Duplicates"):
            dedup_tab.build(engine)
        with gr.Tab("Dictionary look-up"):
            dictionary_tab.build(engine)
        with gr.Tab("Index"):
            index_tab.build(engine)
    blocks.queue(default_concurrency_limit=cfg.concurrency, max_size=256)
    return blocks
