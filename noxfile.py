"""Development sessions: ``nox -s tests lint typecheck demo chaos prometheus browser``,
and ``pythons`` and ``lowest`` for the supported Pythons and lower bounds.

Each session installs the project from this checkout into its own virtualenv,
so what is tested is the installed package, as a user gets it.
"""

from __future__ import annotations

import os
import re
import sys

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite against the installed package, one process per core by default."""
    session.install(".[test]")
    session.run("pytest", *(session.posargs or ["-n", "auto"]))


#: Every Python the package supports: pyproject's ``requires-python`` and classifiers.
PYTHONS = ["3.10", "3.11", "3.12", "3.13"]


@nox.session(python=PYTHONS)
def pythons(session: nox.Session) -> None:
    """Run the test suite on each supported Python, each in a venv of its own.

    nox looks for ``python3.10`` and so on on PATH; one it cannot find is
    skipped with a message (an error where the CI variable is set). With
    pyenv: ``PYENV_VERSION=3.11.7:3.10.13:3.12.1:3.13.0 nox -s pythons``.
    """
    session.install(".[test]")
    session.run("pytest", *(session.posargs or ["-n", "auto"]))


def lower_bounds() -> list[str]:
    """Each ``>=`` the test suite's install asks for, as an ``==`` pin."""
    if sys.version_info < (3, 11):
        raise RuntimeError("nox must run on Python 3.11 or newer for this (tomllib)")
    else:
        import tomllib

        with open("pyproject.toml", "rb") as file:
            project = tomllib.load(file)["project"]
        extras = project["optional-dependencies"]
        wanted = project["dependencies"] + [
            requirement
            for extra in ("testing", "processes", "metrics", "dashboard", "test")
            for requirement in extras[extra]
        ]
        return sorted({re.sub(r"\s*>=\s*", "==", r) for r in wanted if ">=" in r})


@nox.session(python=PYTHONS[0])
def lowest(session: nox.Session) -> None:
    """Run the test suite on the oldest Python with every dependency at its lower bound.

    Each ``>=`` in pyproject's dependencies and in the extras the suite
    installs becomes an ``==`` constraint, so a bound that is too low (an API
    the code uses, a fix the tests need) fails here instead of for a user.
    """
    constraints = os.path.join(session.create_tmp(), "lowest.txt")
    with open(constraints, "w") as file:
        file.write("\n".join(lower_bounds()) + "\n")
    session.install("-c", constraints, ".[test]")
    session.run("pip", "freeze")
    session.run("pytest", *(session.posargs or ["-n", "auto"]))


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
def chaos(session: nox.Session) -> None:
    """The long chaos run: real worker processes SIGKILLed at random (tests/process/chaos.py)."""
    session.install(".[test]")
    session.run("python", "-m", "tests.process.chaos", *session.posargs)


@nox.session
def prometheus(session: nox.Session) -> None:
    """A real Prometheus scrapes a real queue (tests/process/prometheus_scrape.py).

    Uses Debian's ``prometheus`` package: installed with apt-get when it is
    missing and this runs as root; otherwise the session is skipped, saying why.
    """
    import shutil

    binary = shutil.which("prometheus")
    if binary is None and shutil.which("apt-get") is not None and os.geteuid() == 0:
        session.run(
            "apt-get", "install", "-y", "-q", "prometheus", external=True, success_codes=[0, 100]
        )
        binary = shutil.which("prometheus")
    if binary is None:
        session.skip("no prometheus binary, and Debian's package could not be installed here")
    session.install(".[test]")
    session.run("python", "-m", "tests.process.prometheus_scrape", binary)


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


@nox.session
def browser(session: nox.Session) -> None:
    """The dashboard in headless Chromium (tests/process/test_dashboard_browser.py).

    Uses Debian's ``chromium`` and ``chromium-driver``: installed with
    apt-get when missing and this runs as root; otherwise the session is
    skipped, saying why. Screenshots go to build/browser/.
    """
    import shutil

    packages = {"chromium": "chromium", "chromedriver": "chromium-driver"}
    missing = [package for binary, package in packages.items() if shutil.which(binary) is None]
    if missing and shutil.which("apt-get") is not None and os.geteuid() == 0:
        session.run(
            "apt-get", "install", "-y", "-q", *missing, external=True, success_codes=[0, 100]
        )
        missing = [package for binary, package in packages.items() if shutil.which(binary) is None]
    if missing:
        session.skip(
            f"no {' or '.join(missing)}, and Debian's packages could not be installed here"
        )
    session.install(".[browser]")
    session.env["JOBQUEUE_BROWSER_TEST"] = "required"
    session.env.setdefault("JOBQUEUE_SCREENSHOT_DIR", os.path.abspath("build/browser"))
    session.run(
        "pytest",
        "-p",
        "no:cacheprovider",
        "tests/process/test_dashboard_browser.py",
        *session.posargs,
    )
