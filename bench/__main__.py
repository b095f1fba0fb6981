"""`python -m bench`: the benchmark run (bench/run.py)."""

from bench.run import main

raise SystemExit(main())
