"""The vendored scripts are the files VENDOR.md names, byte for byte."""

import hashlib
import re
from pathlib import Path

import wallet.entrypoints.web as web

STATIC = Path(web.__file__).parent / "static"
ROW = re.compile(r"^\| `(?P<file>vendor/[^`]+)` \| .* \| `(?P<sha256>[0-9a-f]{64})` \|$")


def test_every_vendored_file_matches_its_recorded_sha256() -> None:
    recorded = {
        m["file"]: m["sha256"]
        for line in (STATIC / "VENDOR.md").read_text().splitlines()
        if (m := ROW.match(line))
    }
    on_disk = {f"vendor/{p.name}" for p in (STATIC / "vendor").iterdir()}
    assert set(recorded) == on_disk == {"vendor/htmx.min.js", "vendor/chart.umd.min.js"}
    for name, sha256 in recorded.items():
        assert hashlib.sha256((STATIC / name).read_bytes()).hexdigest() == sha256, name
