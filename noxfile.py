"""Development sessions: ``nox -s tests lint typecheck demo``.

Each session installs the project from this checkout into its own virtualenv,
so what is tested is the installed package, as a user gets it.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite against the installed package."""
    session.install(".[test]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Check style and common bugs with ruff."""
    session.install("ruff>=0.5")
    session.run("ruff", "check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """Type-check the package, tests, examples and benchmarks with mypy --strict."""
    session.install(".[test]", "mypy>=1.10", "nox>=2024.3")
    session.run("mypy", "--strict")


@nox.session(venv_backend="none")
def bench(session: nox.Session) -> None:
    """Run the benchmark suite: jobqueue beside its peers (benchmarks/run.py).

    Uses its own venv, .bench-venv, which benchmarks/peers/setup.sh creates
    with the `bench` extra, Debian's redis-server and beanstalkd (when it can
    install them); a peer that cannot run is skipped with the reason.
    """
    session.run("bash", "benchmarks/peers/setup.sh", external=True)
    session.run(".bench-venv/bin/python", "-m", "benchmarks.run", *session.posargs, external=True)


@nox.session
def demo(session: nox.Session) -> None:
    """Run the demo: server, worker processes, one killed mid-job."""
    session.install(".")
    session.run("jobqueue", "demo", *session.posargs)


@nox.session
def crash(session: nox.Session) -> None:
    """SIGKILL a journaled server 50 times under load; check nothing acknowledged is lost."""
    session.install(".[test]")
    session.run("python", "-m", "tests.process.journal_crash", "--restarts", "50", *session.posargs)
