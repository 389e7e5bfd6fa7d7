"""``python -m demo``: the incident replay behind ``make demo`` (see demo/run.py)."""

from demo.run import main

raise SystemExit(main())
