"""Every ``python`` block of README.md and docs/*.md runs, and every relative link resolves.

Conventions for the docs (a line right before a block's opening fence; blank
lines in between are allowed):

- no marker: the block is a complete program. It runs on its own in a fresh
  interpreter (``python -W error``: warnings are errors), as ``__main__``, in
  an empty temporary directory, like a snippet pasted into a new file.
- ``<!-- fragment -->``: the block is not meant to run on its own (an excerpt,
  a signature, code for a server we do not start). It is only parsed
  (``await`` allowed at top level), never run.
- ``<!-- continues -->``: the block goes on from the previous runnable block
  of the same page: that block (and its own chain, if it also continues) runs
  first in the same namespace, then this one. Clean up in the last block of
  the chain.

Server addresses: the docs show the ordinary ports, and before a block runs
this test rewrites them to the test servers of ``tests/conftest.py``:
``127.0.0.1:6379`` -> Redis (``127.0.0.1:16379``), ``127.0.0.1:11211`` ->
memcached (``127.0.0.1:21211``), ``127.0.0.1:11212``-``11214`` -> the memcached
pool nodes (21212-21214), ``127.0.0.1:7001``-``7003`` -> the Redis Cluster
nodes (17001-17003). PostgreSQL is used as written
(``postgresql+psycopg://postgres@127.0.0.1:5432/test``).

Runnable blocks must clean up: a block that uses Redis fails if it leaves
new keys in database 15 (the examples' database). One test per block, its id
``file:line`` of the opening fence; tracebacks point at the Markdown file and
line.

Also checked: every relative link resolves to a file inside the repository,
no page refers to files outside it, the README links every docs page, and
install lines and hints name the distribution (``cachekit-py``).
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import (
    MEMCACHED_POOL_URL,
    MEMCACHED_URL,
    REDIS_CLUSTER_URL,
    REDIS_URL,
    require_server,
)

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: Concept pages that must keep at least one runnable example each.
CONCEPT_PAGES = ("docs/strategies.md", "docs/keys.md", "docs/serializers.md", "docs/ttl.md")
FRAGMENT = "<!-- fragment -->"
CONTINUES = "<!-- continues -->"
PYTHON_INFO = {"python", "py", "python3"}
BLOCK_TIMEOUT = 90.0
FLAGS_TOP_AWAIT = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")


@dataclass(frozen=True)
class Block:
    """One fenced ``python`` block: where it is, its code and its marker."""

    page: str  # relative to the repository root
    line: int  # 1-based line of the opening fence
    code: str
    marker: str  # "", FRAGMENT or CONTINUES

    @property
    def id(self) -> str:
        """``file:line`` of the opening fence."""
        return f"{self.page}:{self.line}"


def parse_blocks(path: Path) -> list[Block]:
    """Return the fenced code blocks of a Markdown file whose info string is Python."""
    lines = path.read_text(encoding="utf-8").splitlines()
    page = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence = m["indent"], m["fence"]
        info = m["info"].strip().split(" ")[0].lower()
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines):
            close = lines[i].strip()
            if close.startswith(fence) and set(close) == {fence[0]}:
                break
            line = lines[i]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            i += 1
        i += 1
        if info not in PYTHON_INFO:
            continue
        before = next((ln.strip() for ln in reversed(lines[:start]) if ln.strip()), "")
        marker = before if before in (FRAGMENT, CONTINUES) else ""
        blocks.append(Block(page, start + 1, "\n".join(body) + "\n", marker))
    return blocks


ALL_BLOCKS = [block for page in PAGES for block in parse_blocks(page)]


def _netloc(url: str) -> str:
    return urlsplit(url).netloc.rsplit("@", 1)[-1]


def _address_map() -> dict[str, str]:
    redis_host = _netloc(REDIS_URL)
    mapping = {"127.0.0.1:6379": redis_host, "127.0.0.1:11211": _netloc(MEMCACHED_URL)}
    for n, node in enumerate(_netloc(MEMCACHED_POOL_URL).split(",")[:3], start=2):
        mapping[f"127.0.0.1:1121{n}"] = node
    cluster_first = _netloc(REDIS_CLUSTER_URL)
    host, _, port = cluster_first.rpartition(":")
    for n in range(3):
        mapping[f"127.0.0.1:{7001 + n}"] = f"{host}:{int(port) + n}"
    return mapping


ADDRESSES = _address_map()
_ADDRESS_RE = re.compile("|".join(re.escape(a) + r"(?!\d)" for a in ADDRESSES))


def to_test_servers(code: str) -> str:
    """Rewrite the docs' ordinary server addresses to the test servers."""
    return _ADDRESS_RE.sub(lambda m: ADDRESSES[m.group(0)], code)


def _runnable_on_page(block: Block, blocks: list[Block]) -> list[Block]:
    return [b for b in blocks if b.page == block.page and b.marker != FRAGMENT]


def chain(block: Block, blocks: list[Block] | None = None) -> list[Block]:
    """The blocks to run, in order, for ``block`` (earlier blocks first when it continues)."""
    page_blocks = _runnable_on_page(block, ALL_BLOCKS if blocks is None else blocks)
    index = page_blocks.index(block)
    start = index
    while page_blocks[start].marker == CONTINUES:
        if start == 0:
            raise AssertionError(
                f"{block.id} is marked {CONTINUES} but no runnable block comes before it"
            )
        start -= 1
    return page_blocks[start : index + 1]


def is_continued(block: Block) -> bool:
    """Whether the next runnable block of the page continues this one."""
    page_blocks = _runnable_on_page(block, ALL_BLOCKS)
    index = page_blocks.index(block)
    return index + 1 < len(page_blocks) and page_blocks[index + 1].marker == CONTINUES


# Runs the blocks in one fresh ``__main__`` module, each compiled with the
# Markdown file as its file name and padded so line numbers match the file.
_RUNNER = """
import json, sys, types
def _run(spec):
    main = types.ModuleType("__main__")
    main.__dict__["__builtins__"] = __builtins__
    sys.modules["__main__"] = main
    with open(spec, encoding="utf-8") as f:
        blocks = json.load(f)
    for path, line, code in blocks:
        exec(compile("\\n" * line + code, path, "exec"), main.__dict__)
_run(sys.argv[1])
"""


def _redis_db15_keys() -> set[bytes]:
    import redis

    client = redis.Redis.from_url(f"redis://{_netloc(REDIS_URL)}/15", socket_timeout=5)
    try:
        return set(client.scan_iter(count=1000))
    finally:
        client.close()


def _require_servers(code: str) -> None:
    if "127.0.0.1:6379" in code:
        require_server(REDIS_URL, "Redis")
    if "127.0.0.1:1121" in code:
        require_server(MEMCACHED_URL, "memcached")
    if "127.0.0.1:700" in code:
        require_server(REDIS_CLUSTER_URL, "Redis Cluster")
    if "127.0.0.1:5432" in code:
        require_server("postgresql://127.0.0.1:5432", "PostgreSQL")


def run_blocks(blocks: list[Block], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run ``blocks`` in order in one fresh interpreter (addresses rewritten); fail on a hang."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    spec = tmp_path / "blocks.json"
    spec.write_text(
        json.dumps([[str(ROOT / b.page), b.line, to_test_servers(b.code)] for b in blocks]),
        encoding="utf-8",
    )
    work = tmp_path / "cwd"
    work.mkdir()
    try:
        return subprocess.run(
            [sys.executable, "-W", "error", "-c", _RUNNER, str(spec)],
            cwd=work,
            capture_output=True,
            text=True,
            timeout=BLOCK_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        ids = " -> ".join(b.id for b in blocks)
        pytest.fail(f"{ids}: still running after {BLOCK_TIMEOUT:.0f} s", pytrace=False)


RUNNABLE = [b for b in ALL_BLOCKS if b.marker != FRAGMENT]
FRAGMENTS = [b for b in ALL_BLOCKS if b.marker == FRAGMENT]


@pytest.mark.parametrize("block", RUNNABLE, ids=[b.id for b in RUNNABLE])
def test_doc_block_runs(block: Block, tmp_path: Path) -> None:
    blocks = chain(block)
    source = "".join(b.code for b in blocks)
    _require_servers(source)
    uses_redis = "127.0.0.1:6379" in source
    before = _redis_db15_keys() if uses_redis else set()
    proc = run_blocks(blocks, tmp_path)
    if proc.returncode != 0:
        ran = " -> ".join(b.id for b in blocks)
        pytest.fail(
            f"{block.id} failed (ran {ran}, exit {proc.returncode}):\n{proc.stderr[-6000:]}",
            pytrace=False,
        )
    if uses_redis and not is_continued(block):
        left = sorted(k.decode(errors="replace") for k in _redis_db15_keys() - before)
        assert not left, f"{block.id} left keys in Redis database 15: {left[:10]}"


def test_doc_fragments_parse() -> None:
    bad = []
    for block in FRAGMENTS:
        try:
            compile(block.code, block.id, "exec", flags=ast.PyCF_ONLY_AST | FLAGS_TOP_AWAIT)
        except SyntaxError as exc:
            bad.append(f"{block.id}: {exc}")
    assert not bad, "fragments that are not valid Python:\n" + "\n".join(bad)


def test_concept_pages_keep_runnable_examples() -> None:
    runnable_pages = {b.page for b in RUNNABLE}
    assert set(CONCEPT_PAGES) <= runnable_pages
    assert "README.md" in runnable_pages


_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_INLINE_CODE = re.compile(r"`[^`\n]*`")


def _prose(path: Path) -> list[tuple[int, str]]:
    """The lines of a Markdown file outside fenced blocks, inline code removed."""
    out: list[tuple[int, str]] = []
    fence = ""
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        m = _FENCE.match(line)
        if m and (not fence or (m["fence"].startswith(fence) and not m["info"].strip())):
            fence = "" if fence else m["fence"]
            continue
        if not fence:
            out.append((n, _INLINE_CODE.sub("", line)))
    return out


def relative_links(path: Path) -> list[tuple[int, str]]:
    """``(line, target)`` of every link in the file that is not a URL or an anchor."""
    links = []
    for n, line in _prose(path):
        for target in _LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue
            links.append((n, target))
    return links


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_relative_links_resolve_inside_the_repository(page: Path) -> None:
    broken = []
    for n, target in relative_links(page):
        resolved = (page.parent / target.split("#", 1)[0]).resolve()
        if not resolved.is_relative_to(ROOT) or not resolved.exists():
            broken.append(f"{page.relative_to(ROOT)}:{n}: {target}")
    assert not broken, "links to missing files or outside the repository:\n" + "\n".join(broken)


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_docs_do_not_point_outside_the_project(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    found = [word for word in ("DESIGN.md", "../shared", "/work/") if word in text]
    assert not found, f"{page.relative_to(ROOT)} refers to {found}, which is not in the project"


def test_every_doc_page_is_linked_from_the_readme() -> None:
    linked = {
        (ROOT / target.split("#", 1)[0]).resolve()
        for _, target in relative_links(ROOT / "README.md")
    }
    missing = [p.name for p in PAGES[1:] if p.resolve() not in linked]
    assert not missing, f"README.md does not link to {missing}"


def test_parser_sees_markers_and_address_rewrites(tmp_path: Path) -> None:
    sample = tmp_path / "sample.md"
    sample.write_text(
        "# t\n\n```python\nx = 1\n```\n\n<!-- continues -->\n```python\nassert x == 1\n```\n"
        "\n<!-- fragment -->\n\n```python\nawait f()\n```\n\n```text\n```python\n```\n",
        encoding="utf-8",
    )
    blocks = parse_blocks(sample)
    assert [(b.line, b.marker) for b in blocks] == [(3, ""), (8, CONTINUES), (14, FRAGMENT)]
    assert blocks[1].code == "assert x == 1\n"
    assert to_test_servers("redis://127.0.0.1:6379/15 memcached://127.0.0.1:11211") == (
        f"redis://{ADDRESSES['127.0.0.1:6379']}/15 memcached://{ADDRESSES['127.0.0.1:11211']}"
    )
    assert to_test_servers("127.0.0.1:63790") == "127.0.0.1:63790"


def test_install_lines_name_the_distribution() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    found = re.search(r'^name = "([^"]+)"', pyproject, re.M)
    assert found, "no [project] name in pyproject.toml"
    name = found[1]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert re.search(rf"pip install {re.escape(name)}\s", readme), (
        f"README: no `pip install {name}`"
    )
    # ``cachekit`` on PyPI is another project: every install line must say cachekit-py
    wrong = re.compile(r"pip install\s+['\"]?cachekit(?![\w-])")
    bad = [
        f"{page.relative_to(ROOT)}:{n}"
        for page in PAGES
        for n, line in enumerate(page.read_text(encoding="utf-8").splitlines(), start=1)
        if wrong.search(line)
    ]
    assert not bad, f"install lines naming the PyPI project 'cachekit' instead of {name}: {bad}"


def test_install_hints_in_the_code_name_the_distribution() -> None:
    wrong = re.compile(r"pip install\s+['\"]?cachekit(?![\w-])")
    bad = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in sorted((ROOT / "src").rglob("*.py"))
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if wrong.search(line)
    ]
    assert not bad, f"error messages naming the PyPI project 'cachekit' (say cachekit-py): {bad}"


def test_changelog_has_the_current_version() -> None:
    import cachekit

    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert f"\n## {cachekit.__version__}\n" in changelog
    assert "\n## Unreleased\n" in changelog


def test_continued_blocks_share_a_namespace_and_others_start_fresh(tmp_path: Path) -> None:
    sample = tmp_path / "sample.md"
    sample.write_text(
        "```python\nx = 1\n```\n\n<!-- continues -->\n```python\nassert x == 1\n```\n\n"
        "```python\nassert 'x' not in globals()\ny = 2\n```\n\n"
        "<!-- continues -->\n```python\nassert y == 2\nraise ValueError('boom')\n```\n",
        encoding="utf-8",
    )
    blocks = parse_blocks(sample)
    first, second, third, fourth = blocks
    assert chain(second, blocks) == [first, second]
    assert chain(third, blocks) == [third]
    for block in (first, second, third):
        proc = run_blocks(chain(block, blocks), tmp_path / str(block.line))
        assert proc.returncode == 0, proc.stderr
    proc = run_blocks(chain(fourth, blocks), tmp_path / "fourth")
    assert proc.returncode == 1
    # the traceback names the Markdown file and the line of the failing statement
    assert f'File "{sample}", line 18' in proc.stderr and "ValueError: boom" in proc.stderr
