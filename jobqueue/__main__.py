"""Run the command line: ``python -m jobqueue ...``."""

from ._cli import main

raise SystemExit(main())
