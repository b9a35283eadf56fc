"""The journal's options: fields of ServerConfig, so ``serve`` generates their flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobqueue import ServerConfig
from jobqueue._cli import _parser
from jobqueue._cli_options import UsageError, record_values


def serve_options(*argv: str) -> dict[str, object]:
    args = _parser().parse_args(["serve", *argv])
    return record_values(args, ServerConfig)


def test_serve_has_journal_flags_from_the_record() -> None:
    values = serve_options("--journal", "/tmp/q", "--fsync", "interval", "--fsync-interval", "0.5")
    config = ServerConfig(**values)  # type: ignore[arg-type]
    assert (config.journal, config.fsync, config.fsync_interval) == ("/tmp/q", "interval", 0.5)
    defaults = ServerConfig(**serve_options())  # type: ignore[arg-type]
    assert (defaults.journal, defaults.fsync) == (None, "always")


def test_a_bad_fsync_mode_is_refused() -> None:
    with pytest.raises(UsageError, match="--fsync: must be always, interval or never"):
        serve_options("--fsync", "sometimes")
    with pytest.raises(ValueError, match="fsync must be always"):
        ServerConfig(fsync="sometimes")


def test_compact_ratio_is_a_flag_above_one() -> None:
    assert ServerConfig(**serve_options("--compact-ratio", "1.5")).compact_ratio == 1.5  # type: ignore[arg-type]
    assert ServerConfig().compact_ratio == 4.0
    with pytest.raises(UsageError, match="--compact-ratio: must be more than 1"):
        serve_options("--compact-ratio", "1")
    with pytest.raises(ValueError, match="compact_ratio must be more than 1"):
        ServerConfig(compact_ratio=0.5)


def test_the_journal_may_be_a_path(tmp_path: Path) -> None:
    assert ServerConfig(journal=tmp_path).journal == str(tmp_path)  # type: ignore[arg-type]
