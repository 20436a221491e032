"""The real Admin API 2026-10 schema, fetched once from npm and cached.

``@shopify/dev-mcp`` ships introspection results of every supported Admin API version;
we take ``package/dist/data/admin_2026-10.json.gz`` out of its tarball and keep it in
``.data/shopify/`` (git-ignored). The file is never committed: it is Shopify's, and the
pinned package version plus the SHA-256 below make every fetch the same bytes.

``make shopify-schema`` runs this module; the stand-in and its tests call
:func:`ensure_schema` too, so a fresh clone needs no manual step.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Final

API_VERSION: Final = "2026-10"
NPM_PACKAGE: Final = "@shopify/dev-mcp@1.16.0"
MEMBER: Final = f"package/dist/data/admin_{API_VERSION}.json.gz"
# SHA-256 of the extracted file from NPM_PACKAGE: a changed file is refused rather
# than silently validating against another schema.
SHA256: Final = "f3b522f264556925eada700e795e4a002a9cba83444ebcc6c0d724254a0c6593"

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
DEFAULT_CACHE_DIR: Final = REPO_ROOT / ".data" / "shopify"
NPM_TIMEOUT: Final = 300.0


class SchemaUnavailable(RuntimeError):
    """The schema is not cached and could not be fetched; the message says what to do."""


def schema_path(cache_dir: Path = DEFAULT_CACHE_DIR) -> Path:
    return cache_dir / f"admin_{API_VERSION}.json.gz"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_introspection(path: Path) -> None:
    with gzip.open(path, "rb") as file:
        document = json.loads(file.read())
    if "__schema" not in document.get("data", {}):
        raise SchemaUnavailable(f"{path} is not an introspection result (no data.__schema)")


def _npm_pack(workdir: Path) -> Path:
    npm = shutil.which("npm")
    if npm is None:
        raise SchemaUnavailable(
            "the Shopify Admin schema is not cached and npm is not installed: install "
            "Node.js and npm (Debian: apt-get install npm), then run 'make shopify-schema'"
        )
    try:
        done = subprocess.run(
            [npm, "pack", NPM_PACKAGE, "--silent"],
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=NPM_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise SchemaUnavailable(f"'npm pack {NPM_PACKAGE}' took over {NPM_TIMEOUT:.0f} s") from exc
    tarballs = sorted(workdir.glob("*.tgz"))
    if done.returncode != 0 or not tarballs:
        detail = (done.stderr or done.stdout).strip()[-2000:]
        raise SchemaUnavailable(
            f"'npm pack {NPM_PACKAGE}' failed (exit {done.returncode}): {detail}"
        )
    return tarballs[0]


def fetch_schema(cache_dir: Path = DEFAULT_CACHE_DIR) -> Path:
    """Download the package with npm, extract the schema, check it, and move it into
    place atomically (concurrent fetches each write their own temporary file)."""
    target = schema_path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="shopify-schema-") as tmp:
        workdir = Path(tmp)
        tarball = _npm_pack(workdir)
        with tarfile.open(tarball, "r:gz") as archive:
            try:
                member = archive.getmember(MEMBER)
            except KeyError as exc:
                raise SchemaUnavailable(f"{NPM_PACKAGE} has no {MEMBER}") from exc
            source = archive.extractfile(member)
            if source is None:
                raise SchemaUnavailable(f"{MEMBER} in {NPM_PACKAGE} is not a file")
            extracted = workdir / target.name
            with source, extracted.open("wb") as out:
                shutil.copyfileobj(source, out)
        actual = _sha256(extracted)
        if actual != SHA256:
            raise SchemaUnavailable(
                f"{MEMBER} from {NPM_PACKAGE} has SHA-256 {actual}, expected {SHA256}"
            )
        _check_introspection(extracted)
        staged = cache_dir / f".{target.name}.{os.getpid()}.tmp"
        shutil.move(str(extracted), staged)
        os.replace(staged, target)
    return target


def ensure_schema(cache_dir: Path = DEFAULT_CACHE_DIR) -> Path:
    """The cached schema file, fetched first if missing (does nothing when present)."""
    target = schema_path(cache_dir)
    if target.is_file():
        return target
    return fetch_schema(cache_dir)


def main(argv: list[str] | None = None) -> int:
    cache_dir = Path(argv[0]) if argv else DEFAULT_CACHE_DIR
    try:
        path = schema_path(cache_dir)
        if path.is_file():
            print(f"shopify-schema: {path} is already there")
            return 0
        print(f"shopify-schema: fetching {MEMBER} from npm {NPM_PACKAGE} ...", flush=True)
        print(f"shopify-schema: {fetch_schema(cache_dir)}")
        return 0
    except SchemaUnavailable as exc:
        print(f"shopify-schema: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
