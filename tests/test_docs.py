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
from hang_guard import HANG_GUARD_S

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
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert result.returncode == 0, f"{page.name} examples failed:\n{result.stderr[-3000:]}"


# ---- the README, and the shell lines of the pages a newcomer reads first ----------------------

ROOT = DOCS.parent
README = ROOT / "README.md"
SHELL_BLOCK = re.compile(r"```(?:bash|sh|console)\n(.*?)```", re.S)
SETUP = ("pip ", "python -m pytest", "HF_HUB_OFFLINE=1 python -m pytest", "mkdocs ")
RUN_AS_IS = ("ls", "inspect", "cp", "demo", "--version", "--help")  # need neither data nor weights
NEEDS_DATA_OR_WEIGHTS = ("run", "eval", "zeroshot", "flops", "validate")  # checked with `clipadapt validate`


def test_readme_python_blocks_run_as_written(tmp_path):
    code = "\n".join(code for marker, code in BLOCK.findall(README.read_text()) if not marker)
    assert code.strip(), "the README has no Python example"
    script = tmp_path / "readme.py"
    script.write_text(code)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert result.returncode == 0, f"README example failed:\n{result.stderr[-3000:]}"


def shell_commands(page: Path) -> list[str]:
    """The commands of a page's shell blocks: continuation lines joined, comments dropped."""
    commands = []
    for block in SHELL_BLOCK.findall(page.read_text()):
        for command in block.replace("\\\n", " ").splitlines():
            command = command.split("  #")[0].strip()
            for part in command.split(" && "):
                if part.strip():
                    commands.append(" ".join(part.split()))
    return commands


def as_check(command: str) -> list[str] | None:
    """The `clipadapt` arguments that check `command`, or None for a set-up command."""
    if command.startswith(SETUP):
        return None
    words = command.split()
    if words[0] == "torchrun":
        words = ["clipadapt", *words[words.index("clipadapt.cli") + 1:]]
    assert words[0] == "clipadapt", f"a shell line that is neither clipadapt nor set-up: {command!r}"
    assert "|" not in command, f"a shell pipe where a command was meant: {command!r}"
    verb, rest = words[1], words[2:]
    if verb in RUN_AS_IS:
        return words[1:]
    assert verb in NEEDS_DATA_OR_WEIGHTS, f"no way to check {command!r}"
    recipe, overrides = rest[0], [w for w in rest[1:] if "=" in w and not w.startswith("-")]
    return ["validate", recipe, *overrides]


def stand_in_paths(args: list[str], root: Path) -> list[str]:
    """The user's data paths (``key=/data/...``) moved under `root`, where empty stand-ins exist,
    so that `validate` checks every key and value but the data itself."""
    moved = []
    for arg in args:
        key, _, value = arg.partition("=")
        if value.startswith("/data/"):
            path = root / value.lstrip("/")
            if path.suffix:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
            else:
                path.mkdir(parents=True, exist_ok=True)
            arg = f"{key}={path}"
        moved.append(arg)
    return moved


PAGES_WITH_SHELL = [README, DOCS / "index.md", DOCS / "reproducing.md"]


@pytest.mark.parametrize("page", PAGES_WITH_SHELL, ids=[p.name for p in PAGES_WITH_SHELL])
def test_shell_lines_run_or_validate(page, tmp_path):
    from typer.testing import CliRunner

    from clipadapt.cli import app

    checks = [c for c in map(as_check, shell_commands(page)) if c is not None]
    assert checks, f"{page.name} has no clipadapt command"
    runner = CliRunner()
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        for args in checks:
            args = stand_in_paths(args, tmp_path)
            result = runner.invoke(app, args)
            assert result.exit_code == 0, f"{page.name}: clipadapt {' '.join(args)}\n{result.output}"
    finally:
        os.chdir(cwd)


def test_the_api_page_check_flags_examples_rendered_as_quotes():
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_api_html", ROOT / ".ci" / "check_api_html.py")
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    ids = "".join(f'<h3 id="{name}"></h3>' for name in check.REQUIRED)
    good = ids + '<p><span class="doc-section-title">Examples:</span></p>\n<div class="highlight"><pre><span class="gp">&gt;&gt;&gt; </span>f()</pre></div>' * 40
    quoted = ids + "<p>Example</p><blockquote><blockquote><blockquote><p>f()</p></blockquote></blockquote></blockquote>" * 40
    assert check.problems(good) == []
    assert any("blockquote" in p for p in check.problems(quoted))
    assert any("load_trained" in p for p in check.problems(good.replace("load_trained", "x")))
