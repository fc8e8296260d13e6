"""`python -m ops <verb>`."""

from ops.cli import main

raise SystemExit(main())
