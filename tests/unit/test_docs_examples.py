"""The docs' examples stay true to the code: a guard against drift, no network.

What a new user copies from README.md, docs/*.md (not performance.md, a log
of measurements) and the docstrings of examples/*.py:

- every ```python block compiles (top-level ``await`` allowed: the blocks
  are fragments of async code), and uses no name that neither it nor an
  earlier block of its file defines, bar the placeholders in
  ``PLACEHOLDERS`` (a block that forgot an import fails here);
- every ``jobqueue ...`` (or ``python -m jobqueue ...``) command line in a
  fenced block, or on a line of its own in an example's docstring, is
  accepted by the CLI's argument parser (parsed only, never run), exactly as
  written: none is skipped (``--payload @FILE`` is only read when the
  command runs, so a parse needs no such file);
- every ``jobqueue ...`` in running text (a `code span`: a synopsis such as
  ``jobqueue list [--state STATE]``, or a mention such as ``jobqueue worker
  --handlers``, which are not whole command lines) names real commands and
  options: each ``--option`` appears in that command's ``--help``;
- every ``python -m examples.X`` / ``benchmarks.X`` / ``tests.X`` names a
  module that exists.

The parser is reached through ``jobqueue._cli._parser``, a private name: the
CLI has no public way to parse without running a command, and this test
must not run one.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import io
import re
import shlex
from functools import cache
from pathlib import Path

import pytest

from jobqueue import _cli
from jobqueue._cli_options import UsageError

ROOT = Path(__file__).resolve().parent.parent.parent
DOCS = [
    ROOT / "README.md",
    *sorted(p for p in (ROOT / "docs").glob("*.md") if p.name != "performance.md"),
]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))

#: Names a block may use without defining them: stand-ins for the reader's
#: own code, not something the docs forgot to import.
PLACEHOLDERS = {
    "README.md": {"user"},  # the Django view's request.user, which Django provides
    "design.md": {"self", "commands", "trio"},  # "simplified" excerpt of the coordinator
}

FENCE = re.compile(r"^ *```(\w*)[^\n]*\n(.*?)^ *```", re.M | re.S)
#: Fenced blocks that hold no shell commands (JSON lines, YAML, PromQL, ...).
NOT_SHELL = {"python", "json", "yaml", "yml", "promql", "ini", "toml"}
SHELL_OPERATORS = {"&&", "||", "|", ";", "&", "(", ")"}
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
RUN_MODULE = re.compile(r"python3? -m ((?:examples|benchmarks|tests)[\w.]*)")


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _python_blocks() -> list[tuple[Path, int, str]]:
    blocks = []
    for path in DOCS:
        text = path.read_text()
        blocks += [
            (path, _line(text, m.start()), m.group(2))
            for m in FENCE.finditer(text)
            if m.group(1) == "python"
        ]
    return blocks


def _command_lines() -> list[tuple[str, list[str]]]:
    """Whole ``jobqueue`` command lines, as argv after the program's name."""
    found: list[tuple[str, str]] = []
    for path in DOCS:
        text = path.read_text()
        for m in FENCE.finditer(text):
            if m.group(1) not in NOT_SHELL:
                first = _line(text, m.start(2))
                for number, line in enumerate(m.group(2).splitlines(), first):
                    found.append((f"{_rel(path)}:{number}", line.removeprefix("$ ")))
    for path in EXAMPLES:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if line.startswith("    jobqueue "):  # a command on a docstring line of its own
                found.append((f"{_rel(path)}:{number}", line))
    commands = []
    for where, line in found:
        for words in _shell_commands(line):
            argv = _jobqueue_argv(words)
            if argv is not None:
                commands.append((where, argv))
    return commands


def _shell_commands(line: str) -> list[list[str]]:
    """The simple commands of a shell line: split at ``&&``, ``|``, ``;``, ``&``."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True  # keep HOST:PORT, MOD:ATTR, @FILE whole
    try:
        tokens = list(lexer)
    except ValueError:  # not shell (a line of output): unless it runs jobqueue
        assert _jobqueue_argv(line.split()) is None, f"cannot split {line!r}"
        return []
    commands: list[list[str]] = [[]]
    for token in tokens:
        if token in SHELL_OPERATORS:
            commands.append([])
        else:
            commands[-1].append(token)
    return [words for words in commands if words]


def _jobqueue_argv(words: list[str]) -> list[str] | None:
    if words and words[0].rsplit("/", 1)[-1] == "jobqueue":
        return words[1:]
    if words[:1] and re.fullmatch(r"(.*/)?python3?", words[0]) and words[1:3] == ["-m", "jobqueue"]:
        return words[3:]
    return None


def _mentions() -> list[tuple[str, str]]:
    """``jobqueue ...`` code spans in running text (outside fenced blocks)."""
    found = []
    for path in DOCS:
        text = path.read_text()
        prose = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)  # keep line numbers
        for m in re.finditer(r"`([^`]+)`", prose):
            span = " ".join(m.group(1).split())  # a span may wrap across lines
            for command in re.split(r" (?:\||&&|;) ", span):  # `make-job | jobqueue submit ...`
                argv = _jobqueue_argv(command.split())
                if argv is not None:
                    found.append((f"{_rel(path)}:{_line(prose, m.start())}", " ".join(argv)))
    for path in EXAMPLES:
        text = path.read_text()
        for m in re.finditer(r"``(jobqueue [^`]+)``", text):
            found.append((f"{_rel(path)}:{_line(text, m.start())}", m.group(1)[len("jobqueue ") :]))
    return found


@cache
def _help(path: tuple[str, ...]) -> str:
    """The ``--help`` text of the command ``path`` leads to (or UsageError)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        _cli._parser().parse_args([*path, "--help"])
    return out.getvalue()


def _parse(argv: list[str]) -> None:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        _cli._parser().parse_args(argv)


@pytest.mark.parametrize(
    ("path", "line", "source"),
    _python_blocks(),
    ids=[f"{_rel(p)}:{n}" for p, n, _ in _python_blocks()],
)
def test_python_blocks_compile(path: Path, line: int, source: str) -> None:
    compile(source, f"{_rel(path)}:{line}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


@pytest.mark.parametrize("path", DOCS, ids=_rel)
def test_python_blocks_define_the_names_they_use(path: Path) -> None:
    defined = set(dir(builtins)) | PLACEHOLDERS.get(path.name, set())
    undefined = []
    for block_path, line, source in _python_blocks():
        if block_path != path:
            continue
        bound, loaded = _names(ast.parse(source))
        defined |= bound  # a later block may use what an earlier one made
        undefined += [f"{_rel(path)}:{line}: {name}" for name in sorted(loaded - defined)]
    assert not undefined, f"names no block defines (a missing import?): {undefined}"


def _names(tree: ast.AST) -> tuple[set[str], set[str]]:
    """Names bound anywhere in ``tree``, and names read anywhere (scopes ignored)."""
    bound: set[str] = set()
    loaded: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (loaded if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.alias):
            bound.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
    return bound, loaded


def test_the_docs_show_command_lines() -> None:
    """The extraction finds what it should, so the parse test cannot pass on nothing."""
    argvs = [argv for _, argv in _command_lines()]
    assert ["demo"] in argvs
    assert shlex.split("schedule add nightly cleanup --cron '0 3 * * *' --tz Europe/Paris") in argvs
    assert len(argvs) >= 12
    mentions = [text for _, text in _mentions()]
    assert "worker --handlers" in mentions
    assert "submit resize --payload -" in mentions
    assert len(mentions) >= 30


@pytest.mark.parametrize(
    ("where", "argv"), _command_lines(), ids=[where for where, _ in _command_lines()]
)
def test_command_lines_parse(where: str, argv: list[str]) -> None:
    try:
        _parse(argv)
    except UsageError as exc:
        pytest.fail(f"{where}: jobqueue {shlex.join(argv)}: {exc}")


@pytest.mark.parametrize(("where", "text"), _mentions(), ids=[where for where, _ in _mentions()])
def test_mentioned_commands_and_options_exist(where: str, text: str) -> None:
    words = text.replace("\\|", "|").split()
    if not words or not re.fullmatch(r"[a-z]+", words[0]):
        # Skipped, as they name no command to check: a bare `jobqueue` (the program,
        # or autoscaling.md's Service of that name), and the README's placeholders
        # for any command, `jobqueue …` and `jobqueue COMMAND --help`.
        assert words[:1] in ([], ["…"], ["COMMAND"]), f"{where}: unknown placeholder {text!r}"
        return
    path: list[str] = []
    for word in words:  # the command, its action, positionals: up to the first option
        if word.startswith(("-", "[")):
            break
        path.append(word)
    try:
        usage = _help(tuple(path))
    except UsageError as exc:
        pytest.fail(f"{where}: jobqueue {text}: {exc}")
    missing = [o for o in OPTION.findall(text) if not re.search(rf"{o}\b(?!-)", usage)]
    assert not missing, f"{where}: jobqueue {' '.join(path)} has no {', '.join(missing)}"


def test_modules_run_with_python_m_exist() -> None:
    texts = [path.read_text() for path in [*DOCS, *EXAMPLES]]
    modules = {module for text in texts for module in RUN_MODULE.findall(text)}
    assert "examples.producer" in modules
    for module in modules:
        base = ROOT / module.replace(".", "/")
        assert base.with_suffix(".py").exists() or (base / "__main__.py").exists(), module
