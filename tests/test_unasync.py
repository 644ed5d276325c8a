"""The sync cache is generated from the async source: the committed files must be up to date."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_generated_sync_files_are_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "unasync.py"), "--check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_hand_kept_twins() -> None:
    """Every sync module but the primitives is generated (says so in its first line)."""
    sync = ROOT / "src" / "cachekit" / "_sync"
    for path in sync.glob("*.py"):
        if path.name in ("__init__.py", "primitives.py"):
            continue
        assert path.read_text().startswith('"""Generated from ``_async/'), path
        assert (ROOT / "src" / "cachekit" / "_async" / path.name).exists(), path
