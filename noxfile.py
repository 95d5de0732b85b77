"""Developer sessions: ``nox`` runs tests, lint and types; ``nox -s bench`` the benchmarks."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "types"]
nox.options.reuse_existing_virtualenvs = True


@nox.session(python="3.11")
def tests(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", "-q", *session.posargs)


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python="3.11")
def types(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    # The package AND the tests, under --strict (pyproject's [tool.mypy] files).
    session.run("mypy", "--strict", "dialler_async", "tests")


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    session.install("-e", ".[bench]")
    session.run("python", "-m", "benchmarks", *session.posargs)
