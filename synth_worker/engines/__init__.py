"""Speech engines behind one interface: `espeak` (CPU, development and CI) and `cosyvoice3` (GPU).

`base` holds the request and the Engine protocol, `errors` what engines raise, and `registry` the
one place an engine is chosen by name (`load_engine`, `probe_engine`).
"""
