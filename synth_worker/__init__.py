"""Synthesis workers: pull jobs, run the engine, store audio, publish completion."""
