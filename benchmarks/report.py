"""Write one benchmark's section of a Markdown page without touching the others.

Each script owns the text between `<!-- begin NAME -->` and `<!-- end NAME -->` in the
page (for example `docs/benchmarks.md`); running it again replaces only that section.
"""

import os
import pathlib
import platform
import re

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
BENCHMARKS_PAGE = REPO_ROOT / "docs" / "benchmarks.md"
REPRODUCTIONS_PAGE = REPO_ROOT / "docs" / "reproductions.md"


def machine_description() -> str:
    """Return a one-line description of the machine a measurement ran on."""
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}"


def write_section(page: pathlib.Path, name: str, markdown: str) -> None:
    """Replace the section `name` of `page` with `markdown`, appending it if absent."""
    begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    block = f"{begin}\n{markdown.strip()}\n{end}"
    text = page.read_text(encoding="utf-8") if page.exists() else ""
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + block + "\n"
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(text, encoding="utf-8")
