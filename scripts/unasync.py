"""Generate the sync cache (``src/cachekit/_sync/``) from its async source (``_async/``).

Like httpcore's script: the async code is the one source of truth and the
sync twin is derived from it by token rules (``async def`` -> ``def``,
``await x`` -> ``x``, ``AsyncCache`` -> ``Cache``, ``Awaitable[T]`` -> ``T``,
...), then formatted with ruff. ``primitives.py`` is written by hand on both
sides (it is where asyncio and threading differ).

    python scripts/unasync.py          # rewrite src/cachekit/_sync/*.py
    python scripts/unasync.py --check  # exit 1 if a generated file is out of date
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASYNC_DIR = ROOT / "src" / "cachekit" / "_async"
SYNC_DIR = ROOT / "src" / "cachekit" / "_sync"
#: Hand-written on both sides.
SKIP = {"primitives.py", "__init__.py"}

HEADER = '''"""Generated from ``_async/{name}`` by ``scripts/unasync.py``: do not edit.

'''

SUBS: list[tuple[str, str]] = [
    (
        r"from \.\.backends\.aio import async_backend_from_url",
        "from ..backends import backend_from_url",
    ),
    (r"\basync_backend_from_url\b", "backend_from_url"),
    (r"contextlib\.asynccontextmanager", "contextlib.contextmanager"),
    (r"\basync def ", "def "),
    (r"\basync with ", "with "),
    (r"\basync for ", "for "),
    (r"\bawait ", ""),
    (r"\bAsync([A-Z]\w*)", r"\1"),
    (r"\baclose\b", "close"),
    (r"__aenter__", "__enter__"),
    (r"__aexit__", "__exit__"),
]


def _strip_awaitable(text: str) -> str:
    """``Awaitable[X]`` -> ``X``, brackets inside ``X`` included."""
    out, i = [], 0
    while True:
        j = text.find("Awaitable[", i)
        if j < 0:
            out.append(text[i:])
            return "".join(out)
        out.append(text[i:j])
        depth, k = 1, j + len("Awaitable[")
        while depth:
            depth += {"[": 1, "]": -1}.get(text[k], 0)
            k += 1
        out.append(text[j + len("Awaitable[") : k - 1])
        i = k


def _drop_unused_awaitable(text: str) -> str:
    if re.search(r"\bAwaitable\b(?!,|\s*$)", text.split("\n\n\n", 1)[-1]):
        return text
    text = re.sub(r"\bAwaitable, ", "", text)
    return re.sub(r", Awaitable\b", "", text)


def convert(source: str, name: str) -> str:
    """The sync text of one async source file (before formatting)."""
    doc_end = source.index('"""', 3) + 3
    docstring, body = source[:doc_end], source[doc_end:]
    lines = docstring[3:-3].strip().split("\n\n")
    kept = [p for p in lines if "async source of truth" not in p]
    docstring = HEADER.format(name=name) + "\n\n".join(kept) + '\n"""'
    text = docstring + body
    for pattern, repl in SUBS:
        text = re.sub(pattern, repl, text)
    text = _strip_awaitable(text)
    return _drop_unused_awaitable(text)


def _ruff() -> str:
    here = Path(sys.executable).parent / "ruff"
    return str(here) if here.exists() else (shutil.which("ruff") or "ruff")


def generate() -> dict[Path, str]:
    """Every generated file's path and formatted text."""
    out: dict[Path, str] = {}
    for src in sorted(ASYNC_DIR.glob("*.py")):
        if src.name in SKIP:
            continue
        text = convert(src.read_text(), src.name)
        text = subprocess.run(  # renamed imports and __all__ entries are sorted again
            [
                _ruff(),
                "check",
                "--fix-only",
                "--select",
                "I001,RUF022",
                "--stdin-filename",
                str(SYNC_DIR / src.name),
                "-",
            ],
            input=text,
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        ).stdout
        formatted = subprocess.run(
            [_ruff(), "format", "--stdin-filename", str(SYNC_DIR / src.name), "-"],
            input=text,
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        ).stdout
        out[SYNC_DIR / src.name] = formatted
    return out


def main() -> int:
    """Write the sync files, or with ``--check`` report the stale ones."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a file is out of date")
    args = parser.parse_args()
    stale = []
    for path, text in generate().items():
        if path.exists() and path.read_text() == text:
            continue
        stale.append(path)
        if not args.check:
            path.write_text(text)
    if args.check and stale:
        for path in stale:
            print(f"out of date: {path.relative_to(ROOT)} (run python scripts/unasync.py)")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
