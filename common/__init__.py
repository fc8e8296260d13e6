"""Helpers both sides need (config, ids, audio codecs, logging); imports neither side."""
