"""Chaos: real worker processes SIGKILLed at random while jobs run.

The quick suite runs a short version of the chaos driver, tests/process/chaos.py
(python -m tests.process.chaos runs the long one).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.process import chaos


@pytest.mark.slow
@pytest.mark.parametrize("prefetch", ["1", "auto"])
async def test_chaos_short_run_loses_nothing_and_completes_each_job_once(
    tmp_path: Path, prefetch: str
) -> None:
    """The chaos run of ``python -m tests.process.chaos``, scaled down for the quick suite.

    With ``prefetch="auto"`` the workers' batches also give back jobs they
    have not started, which the run's accounting checks beside the kills.
    """
    report = await chaos.run_chaos(
        jobs=300,
        kills=2,
        kill_every=(0.3, 0.6),
        job_seconds=(0.005, 0.05),
        seed=20240611,
        log_dir=tmp_path,
        time_limit=30,
        prefetch=prefetch,
    )
    print(report.summary())
    assert report.violations == [], report.summary()
    assert len(report.kills) == 2
    assert sum(report.runs_per_job.values()) == 300
