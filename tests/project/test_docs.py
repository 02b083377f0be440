"""The documentation builds with ``mkdocs build --strict`` (every page in the nav, every API reference resolved, code
highlighted), and the quickstart starts at the bundled model, whose first snippet runs as written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_mkdocs_build_strict_passes(tmp_path):
    pytest.importorskip("mkdocstrings")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(ROOT / "mkdocs.yml"),
            "--site-dir",
            str(tmp_path / "site"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    html = (tmp_path / "site" / "api" / "pipelines" / "index.html").read_text()
    assert "from_pretrained" in html and "num_inference_steps" in html  # the docstrings were rendered
    code = (tmp_path / "site" / "quickstart" / "index.html").read_text()
    assert '<div class="highlight"><pre>' in code and '<span class="kn">from</span>' in code  # Pygments-highlighted


def _section(text: str, title: str) -> str:
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


@pytest.mark.parametrize("title", ["A first image", "Working offline"])
def test_quickstart_starts_at_the_bundled_model(title: str):
    """The first code of these sections uses ddpm-mnist, which works everywhere and offline; the Hub comes after."""
    section = _section((ROOT / "docs" / "quickstart.md").read_text(), title)
    first_python = section[section.index("```python") :]
    assert first_python.index("ddpm-mnist") < first_python.find("google/") or "google/" not in first_python


def test_quickstart_first_image_runs_as_written(tmp_path, monkeypatch):
    """The first snippet of "A first image", verbatim (the bundled model, offline), writes its PNG."""
    section = _section((ROOT / "docs" / "quickstart.md").read_text(), "A first image")
    code = section[section.index("```python\n") + len("```python\n") :]
    code = code[: code.index("```")]
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "quickstart.md", "exec"), {})
    from PIL import Image

    with Image.open(tmp_path / "digit.png") as img:
        assert img.size == (32, 32)


#: The pages a newcomer reads first, where the bare ``ddpm sample`` and its folder are described.
NEWCOMER_PAGES = ("README.md", "docs/index.md", "docs/quickstart.md", "docs/cli.md", "docs/errors.md")


@pytest.mark.parametrize("page", NEWCOMER_PAGES)
def test_the_pages_name_the_default_sampler_and_its_folder_as_they_are(page: str):
    """Each paragraph that says "the default sampler" names the current one, and each default folder it names
    (``samples/ddpm-mnist-NAME-STEPS``) is what ``ddpm sample`` makes: NAME's default steps, and the default sampler
    on a line whose ``ddpm sample`` names none."""
    import re

    from ddpm.commands._sampling import DEFAULT_SCHEDULER, default_steps

    text = (ROOT / page).read_text()
    for paragraph in text.split("\n\n"):
        if "the default sampler" in paragraph.lower():
            assert DEFAULT_SCHEDULER in paragraph or "DPM-Solver++ 3M" in paragraph, paragraph
    for line in text.splitlines():
        for name, steps in re.findall(r"samples/ddpm-mnist-([a-z+-]+?)-(\d+)\b", line):
            assert int(steps) == default_steps(name), line
            if "ddpm sample" in line and "--scheduler" not in line:
                assert name == DEFAULT_SCHEDULER, line
