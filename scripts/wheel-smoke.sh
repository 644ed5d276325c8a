#!/usr/bin/env bash
# Build the sdist and the wheel, install each into a fresh venv, and smoke-test them.
#
# Usage: scripts/wheel-smoke.sh [python]   (default: .venv/bin/python, made by `make test`)
# The build runs without isolation in that python (the dev extra has build and
# setuptools), so it needs no download; the fresh venvs take cachekit's only
# dependency (cachetools) from the configured package index. The source tree is
# copied first, so nothing (build/, *.egg-info) is written into the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-.venv/bin/python}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/cachekit-wheel-smoke.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

mkdir -p "$WORK/src"
cp -R pyproject.toml README.md LICENSE src "$WORK/src/"
find "$WORK/src" \( -name '*.egg-info' -o -name __pycache__ \) -prune -exec rm -rf {} +

echo "wheel-smoke: building sdist and wheel (the wheel is built from the sdist)"
"$PY" -m build --no-isolation --outdir "$WORK/dist" "$WORK/src" >"$WORK/build.log" 2>&1 ||
    { cat "$WORK/build.log"; exit 1; }
if grep -i 'warning' "$WORK/build.log" | grep -v -i 'byte-compiling is disabled'; then
    echo "wheel-smoke: the build printed warnings (above)" >&2
    exit 1
fi
wheel=$(ls "$WORK"/dist/*.whl)
sdist=$(ls "$WORK"/dist/*.tar.gz)
echo "wheel-smoke: built $(basename "$wheel") and $(basename "$sdist")"

"$PY" - "$wheel" <<'PYEOF'
import sys
import zipfile

names = zipfile.ZipFile(sys.argv[1]).namelist()
for wanted in ("cachekit/py.typed", "cachekit/__init__.py"):
    assert wanted in names, f"{wanted} missing from the wheel"
assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), "LICENSE missing"
assert not any(n.startswith("tests/") for n in names), "tests/ shipped in the wheel"
PYEOF

smoke() {  # smoke <what> <file to install>
    local venv="$WORK/venv-$1"
    "$PY" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "$2" 2>&1 |
        grep -v "is neither a file nor a directory" || true
    (cd "$WORK" && "$venv/bin/python" -W error - <<'PYEOF'
import asyncio
import importlib.metadata
import importlib.resources
import sys

import cachekit as ck

assert ck.__file__.startswith(sys.prefix), f"imported from {ck.__file__}, not the venv"
assert ck.__version__ == importlib.metadata.version("cachekit-py"), "two versions"
assert importlib.resources.files("cachekit").joinpath("py.typed").is_file()

cache = ck.Cache.from_url("memory://?maxsize=100", namespace="smoke", ttl=60)
cache.set("k", {"v": [1, 2]})
assert cache.get("k") == {"v": [1, 2]}
calls = []


@cache.cached()
def double(x: int) -> int:
    calls.append(x)
    return 2 * x


assert double(21) == 42 and double(21) == 42 and calls == [21]
assert cache.stats().hits == 2


async def round_trip() -> object:
    acache = ck.AsyncCache.from_url("memory://", namespace="smoke", ttl=60)
    await acache.set("k", 1)
    value = await acache.get("k")
    await acache.aclose()
    return value


assert asyncio.run(round_trip()) == 1
print(f"wheel-smoke: cachekit {ck.__version__} OK")
PYEOF
    )
    "$venv/bin/cachekit" --help >/dev/null
    [ "$("$venv/bin/cachekit" --version)" = "cachekit $("$venv/bin/python" -c 'import cachekit; print(cachekit.__version__)')" ] ||
        { echo "wheel-smoke: cachekit --version: $("$venv/bin/cachekit" --version)" >&2; exit 1; }
    echo "wheel-smoke: $1 installs, imports, round-trips, and cachekit --help runs"
}

smoke wheel "$wheel"
smoke sdist "$sdist"
