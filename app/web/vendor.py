"""Re-vendor the browser assets from the npm registry: `python -m app.web.vendor` (needs `npm`).

The pages under `app/web` load nothing from another host: every script and stylesheet they use is a
file committed under `app/web/assets/<package>@<version>/`, taken from the package's tarball on the
npm registry at the version pinned in `PINS`. This script downloads each tarball with `npm pack`,
checks its SHA-512 against the integrity the registry publishes (`npm view … dist.integrity`), copies
the listed files (and the package's licence) and writes `assets/manifest.json`: for each package its
version, tarball and tarball integrity, and for each file where it came from and its SHA-384 in
Subresource Integrity form. The pages put that hash in their `integrity=` attributes, and the tests hash
the bytes the server serves and compare them with the manifest.

To upgrade a package: change its pin, run this, look at the page in a browser, run the tests, commit.
Nothing imports this module; the server only reads the manifest.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import NamedTuple

ASSETS = Path(__file__).resolve().parent / "assets"
MANIFEST = ASSETS / "manifest.json"


class Pin(NamedTuple):
    name: str  # the npm package
    version: str
    files: tuple[str, ...]  # paths inside the tarball's `package/` directory


PINS = (
    Pin("react", "18.2.0", ("umd/react.production.min.js", "LICENSE")),
    Pin("react-dom", "18.2.0", ("umd/react-dom.production.min.js", "LICENSE")),
    Pin("graphiql", "3.8.3", ("graphiql.min.js", "graphiql.min.css", "LICENSE")),
    # The query builder in the sidebar (MIT; its tarball carries no licence file).
    Pin("@graphiql/plugin-explorer", "1.0.2", ("dist/index.umd.js", "dist/style.css")),
    # The client for subscriptions over graphql-transport-ws, handed to GraphiQL as its `wsClient`.
    Pin("graphql-ws", "6.4.2", ("umd/graphql-ws.min.js", "LICENSE.md")),
    # The OpenAPI viewer at /docs.
    Pin("swagger-ui-dist", "5.35.0", ("swagger-ui-bundle.js", "swagger-ui.css", "LICENSE", "NOTICE")),
)


def directory(name: str, version: str) -> str:
    """`@graphiql/plugin-explorer`, `1.0.2` -> `graphiql-plugin-explorer@1.0.2` (one path segment)."""
    return f"{name.removeprefix('@').replace('/', '-')}@{version}"


def sri(data: bytes, algorithm: str = "sha384") -> str:
    """The Subresource Integrity string of `data`: `sha384-<base64 digest>`."""
    return f"{algorithm}-{base64.b64encode(hashlib.new(algorithm, data).digest()).decode()}"


def _npm(*args: str, cwd: Path) -> str:
    return subprocess.run(["npm", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def vendor_one(pin: Pin, work: Path) -> dict[str, object]:
    spec = f"{pin.name}@{pin.version}"
    published = json.loads(_npm("view", spec, "dist", "--json", cwd=work))
    packed = json.loads(_npm("pack", spec, "--json", cwd=work))[0]
    tarball = work / packed["filename"]
    actual = sri(tarball.read_bytes(), "sha512")
    if actual != published["integrity"]:
        raise SystemExit(f"{spec}: tarball is {actual}, the registry publishes {published['integrity']}")
    target = ASSETS / directory(pin.name, pin.version)
    target.mkdir(parents=True)
    files: dict[str, dict[str, str]] = {}
    with tarfile.open(tarball) as tar:
        for path in pin.files:
            member = tar.extractfile(f"package/{path}")
            if member is None:
                raise SystemExit(f"{spec}: package/{path} is not a file")
            data = member.read()
            name = Path(path).name
            (target / name).write_bytes(data)
            files[name] = {"from": f"package/{path}", "integrity": sri(data)}
    return {
        "name": pin.name,
        "version": pin.version,
        "tarball": published["tarball"],
        "tarball_integrity": published["integrity"],
        "files": files,
    }


def main() -> None:
    for old in ASSETS.glob("*@*"):
        shutil.rmtree(old)
    with tempfile.TemporaryDirectory() as tmp:
        packages = {directory(pin.name, pin.version): vendor_one(pin, Path(tmp)) for pin in PINS}
    manifest = {
        "about": "Written by `python -m app.web.vendor`: files taken from npm tarballs; do not edit by hand.",
        "packages": packages,
    }
    MANIFEST.write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {MANIFEST} ({len(packages)} packages)", file=sys.stderr)


if __name__ == "__main__":
    main()
