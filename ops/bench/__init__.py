"""`python -m ops.bench`: measure VoiceRelay on this machine (docs/BENCHMARKS.md)."""
