"""Who is speaking: speaker embeddings (Resemblyzer) and the CPU engine's adaptation toward a voice."""
