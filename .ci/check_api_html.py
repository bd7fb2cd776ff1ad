"""Check the built API reference: docstring examples render as highlighted code, and the
functions a user needs are on the page. Usage: python .ci/check_api_html.py SITE_DIR"""

from __future__ import annotations

import re
import sys
from pathlib import Path

REQUIRED = ("clipadapt.inject.inject", "clipadapt.engine.tasks.load_trained", "clipadapt.engine.tasks.predict",
            "clipadapt.engine.evaluate.evaluate")
PROMPT = "&gt;&gt;&gt;"
PROMPT_AS_CODE = '<span class="gp">&gt;&gt;&gt; </span>'
SECTION = re.compile(r'<span class="doc-section-title">Examples:</span></p>\s*(<div class="highlight">)?')


def problems(html: str) -> list[str]:
    """What is wrong with the API page's HTML (empty when it is right)."""
    found = []
    if "<blockquote" in html:
        found.append(f"{html.count('<blockquote')} blockquote(s): an example rendered as Markdown quotes")
    loose = html.count(PROMPT) - html.count(PROMPT_AS_CODE)
    if loose:
        found.append(f"{loose} '>>>' prompt(s) outside highlighted code")
    sections = SECTION.findall(html)
    if len(sections) < 40:
        found.append(f"only {len(sections)} example sections (expected one per documented function, at least 40)")
    if not all(sections):
        found.append(f"{sections.count('')} example section(s) without a highlighted code block")
    found += [f"{name} is not on the page" for name in REQUIRED if f'id="{name}"' not in html]
    return found


def main(site: str) -> int:
    page = Path(site) / "api" / "index.html"
    if not page.is_file():
        print(f"{page} does not exist: build the site first", file=sys.stderr)
        return 1
    found = problems(page.read_text(encoding="utf-8"))
    for problem in found:
        print(f"{page}: {problem}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
