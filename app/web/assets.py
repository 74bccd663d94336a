"""The vendored browser assets, listed in `assets/manifest.json`, served at `/assets/<package>@<version>/…`.

Only files listed in the manifest are served (never an arbitrary path under the directory). Their URLs
carry the package's version, so a file behind a URL never changes: they are served with a one-year,
`immutable` cache lifetime, and the pages name each one with its SHA-384 (`integrity=`), so a browser
refuses a file whose bytes differ from the manifest's. `python -m app.web.vendor` writes the files and
the manifest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
MANIFEST = ASSETS_DIR / "manifest.json"
ASSETS_PATH = "/assets"

# The URL of a file names its version: it never changes, so browsers may keep it for a year.
IMMUTABLE = "public, max-age=31536000, immutable"

_MEDIA_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


@dataclass(frozen=True)
class Asset:
    """One vendored file: `directory` is `<package>@<version>`, `integrity` its SRI (`sha384-…`)."""

    package: str  # the npm package name, e.g. "@graphiql/plugin-explorer"
    version: str
    directory: str
    file: str
    integrity: str

    @property
    def path(self) -> Path:
        return ASSETS_DIR / self.directory / self.file

    @property
    def url(self) -> str:
        """Relative to the application's root (the pages prefix it with the request's root path)."""
        return f"{ASSETS_PATH}/{self.directory}/{self.file}"

    @property
    def media_type(self) -> str:
        return _MEDIA_TYPES.get(self.path.suffix, "text/plain; charset=utf-8")


@cache
def manifest() -> dict[tuple[str, str], Asset]:
    """Every vendored file by (directory, file name); read once, on first use."""
    packages = json.loads(MANIFEST.read_text(encoding="utf-8"))["packages"]
    return {
        (directory, file): Asset(package["name"], package["version"], directory, file, entry["integrity"])
        for directory, package in packages.items()
        for file, entry in package["files"].items()
    }


def asset(package: str, file: str) -> Asset:
    """The vendored `file` of the npm `package`, at whichever version the manifest pins."""
    for candidate in manifest().values():
        if candidate.package == package and candidate.file == file:
            return candidate
    raise LookupError(f"{package}/{file} is not vendored (see app/web/vendor.py)")


async def asset_endpoint(request: Request) -> FileResponse:
    """GET /assets/<package>@<version>/<file>: a file listed in the manifest, cacheable for a year."""
    found = manifest().get((request.path_params["directory"], request.path_params["file"]))
    if found is None:
        raise HTTPException(404, "no such asset")
    return FileResponse(
        found.path,
        media_type=found.media_type,
        headers={"Cache-Control": IMMUTABLE, "X-Content-Type-Options": "nosniff"},
    )
