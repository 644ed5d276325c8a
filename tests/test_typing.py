"""Type checkers see through the decorators: signatures kept, helpers typed, methods bound."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

USER_CODE = textwrap.dedent(
    """
    import cachekit as ck

    cache = ck.Cache(ck.MemoryBackend(), namespace="t")

    @cache.cached(ttl=60)
    def get_user(user_id: int, full: bool = False) -> dict[str, int]:
        return {"id": user_id}

    @cache.writes(key="user:{user_id}")
    def save_user(user_id: int, name: str) -> str:
        return name

    class Repo:
        @cache.cached()
        def load(self, x: int) -> str:
            return str(x)

    reveal_type(get_user(1))
    reveal_type(get_user.invalidate(1))
    reveal_type(get_user.refresh(1, full=True))
    reveal_type(save_user(1, "a"))
    reveal_type(Repo().load(3))
    reveal_type(Repo().load.invalidate(3))
    get_user("one")
    Repo().load("three")
    save_user(1, 2)
    """
)


def test_mypy_sees_signatures_and_helpers(tmp_path: Path) -> None:
    src = tmp_path / "user_code.py"
    src.write_text(USER_CODE)
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(src)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    ).stdout
    lines = out.splitlines()
    revealed = [  # mypy < 1.16 prints "builtins.str", newer ones "str"
        line.split("Revealed type is ")[1].replace("builtins.", "")
        for line in lines
        if "Revealed" in line
    ]
    assert revealed == [
        '"dict[str, int]"',
        '"bool"',
        '"dict[str, int]"',
        '"str"',
        '"str"',
        '"bool"',
    ], out
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert len(errors) == 3, out  # the three wrong calls, and nothing else
    assert all("incompatible type" in e for e in errors), out
