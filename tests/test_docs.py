"""Every Python example in the docs runs as written (one subprocess per page).

A block preceded by the line ``<!-- not-run: REASON -->`` is left out (it needs real weights or
data); the reason is part of the page source.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
BLOCK = re.compile(r"(<!-- not-run: [^>]+ -->\s*\n)?```python\n(.*?)```", re.S)


def page_code(page: Path) -> str:
    return "\n".join(code for marker, code in BLOCK.findall(page.read_text()) if not marker)


PAGES = sorted(p for p in DOCS.glob("*.md") if page_code(p).strip())


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_docs_examples_run(page, tmp_path):
    script = tmp_path / f"{page.stem}.py"
    script.write_text(page_code(page))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{page.name} examples failed:\n{result.stderr[-3000:]}"
