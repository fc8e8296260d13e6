"""Operator tools: `python -m ops <verb>` (see ops.cli) and the local service processes they run."""
