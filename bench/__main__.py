"""`python -m bench`: run the whole benchmark and print one table."""

from bench.run import main

raise SystemExit(main())
