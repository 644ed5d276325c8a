"""Every ``python`` block of the concept pages runs, each on its own, warnings as errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = ("strategies.md", "keys.md", "serializers.md", "ttl.md")
BLOCKS = [
    pytest.param(page, i, code, id=f"{page}[{i}]")
    for page in PAGES
    for i, code in enumerate(re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), re.S))
]


def test_every_page_has_examples() -> None:
    assert {page for page, _, _ in (p.values for p in BLOCKS)} == set(PAGES)


@pytest.mark.parametrize(("page", "index", "code"), BLOCKS)
def test_doc_example_runs(page: str, index: int, code: str) -> None:
    exec(compile(code, f"docs/{page}[{index}]", "exec"), {"__name__": f"docs_{index}"})
