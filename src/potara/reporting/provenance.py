"""Which code made a result: the package version and, from a git checkout, its commit (``+modified`` when tracked
source files differ from it), so a committed result names the code that produced it."""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]
MODIFIED = "+modified"


def code_version() -> dict[str, str]:
    """``{"potara": version, "commit": sha[+modified]}``; the commit is blank outside a git checkout."""
    try:
        version = metadata.version("potara")
    except metadata.PackageNotFoundError:
        version = ""
    return {"potara": version, "commit": _commit(PACKAGE_DIR)}


def _commit(folder: Path) -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()

    try:
        sha = git("rev-parse", "--short=12", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no", "--", ".")
    except (OSError, subprocess.SubprocessError):
        return ""
    return sha + (MODIFIED if changed else "")
