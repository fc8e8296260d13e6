"""The seed article's design, reimplemented minimally as the benchmark's baseline.

A Flask `/tts` endpoint (a stdlib `http.server` one when Flask is not installed) that, per request,
writes the base64 prompt audio to a temp file and runs the engine in a fresh subprocess with a 30 s
timeout: the `subprocess.run(["bash", "run.sh", ...])` pattern, with `python -c` in place of run.sh.
Every request therefore pays interpreter start, imports and engine load (the known failure "a model
re-loaded per request"). Output names are uuids, not the article's per-second timestamps, so concurrent
requests do not overwrite each other's audio: the baseline is measured without that bug.

Run: `python -m ops.bench.seed_baseline --port 5000 --workdir /tmp/seed`.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import subprocess
import sys
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 60  # the article's 30 s, doubled: a busy 2-core machine loads torch slowly
TEXT_MAX_CHARS = 200

# What run.sh stands for: load the models, analyse the voice, synthesise once, encode, write, exit.
# The same engine work a VoiceRelay worker does for a task, except that nothing survives the request:
# the speaker encoder is loaded and the voice analysed every time (VoiceRelay does both once).
ENGINE_SCRIPT = """
import sys
from pathlib import Path
from common.audio import decode_audio, encode_audio
from synth_worker.engines.base import SynthesisRequest
from synth_worker.engines.registry import load_engine
from synth_worker.worker import load_speaker_encoder
text, prompt_path, output_path = sys.argv[1:4]
load_speaker_encoder()
engine = load_engine("espeak")
prompt = decode_audio(Path(prompt_path).read_bytes(), target_rate_hz=16000)
request = SynthesisRequest(text=text, mode="zero_shot", prompt=prompt, prompt_text="",
                           speaker_key="seed-baseline", speaker_profile=engine.analyse_speaker(prompt))
Path(output_path).write_bytes(encode_audio(engine.synthesize(request), "mp3"))
"""


def generate(body: Any, workdir: Path) -> tuple[int, dict[str, Any]]:
    """One /tts request, as the article handles it: (HTTP status, JSON body)."""
    if not isinstance(body, dict):
        return 400, {"error": "expected a JSON object"}
    text = str(body.get("text", "")).strip()
    if not text:
        return 400, {"error": "text is empty"}
    if len(text) > TEXT_MAX_CHARS:
        return 400, {"error": f"text longer than {TEXT_MAX_CHARS} characters"}
    try:
        audio = base64.b64decode(body.get("prompt_audio") or "", validate=True)
    except (binascii.Error, ValueError):
        return 400, {"error": "prompt_audio is not base64"}
    if not audio:
        return 400, {"error": "prompt_audio is required"}
    task_id = uuid.uuid4().hex
    prompt_path = workdir / "tmp" / f"{task_id}_prompt.wav"
    output_path = workdir / "outputs" / f"output_{task_id}.mp3"
    try:
        prompt_path.write_bytes(audio)
        cmd = [sys.executable, "-c", ENGINE_SCRIPT, text, str(prompt_path), str(output_path)]
        result = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=TIMEOUT_S)
        if result.returncode != 0:
            return 500, {"error": "synthesis failed", "detail": result.stderr.strip()[-200:]}
        return 200, {"success": True, "task_id": task_id, "audio_url": f"/outputs/{output_path.name}"}
    except subprocess.TimeoutExpired:
        return 504, {"error": "synthesis timed out"}
    finally:
        prompt_path.unlink(missing_ok=True)


def flask_app(workdir: Path) -> Any:
    """The article's Flask app (raises ImportError without Flask)."""
    from flask import Flask, jsonify, request

    app = Flask("seed_baseline")

    @app.post("/tts")
    def tts() -> Any:
        status, body = generate(request.get_json(silent=True), workdir)
        return jsonify(body), status

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify({"status": "ok"})

    return app


class _Handler(BaseHTTPRequestHandler):
    workdir: Path

    def do_GET(self) -> None:
        self._reply(200 if self.path == "/healthz" else 404, {"status": "ok"})

    def do_POST(self) -> None:
        if self.path != "/tts":
            self._reply(404, {"error": "not found"})
            return
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        self._reply(*generate(body, self.workdir))

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request would dominate the log


def server_kind() -> str:
    """What `serve` will run: 'flask X.Y.Z' or 'http.server'."""
    try:
        from importlib.metadata import version

        import flask  # noqa: F401

        return f"flask {version('flask')}"
    except ImportError:
        return "http.server"


def serve(port: int, workdir: Path) -> None:
    """Serve /tts on 127.0.0.1:port until killed, threaded like the article's `threaded=True`."""
    (workdir / "tmp").mkdir(parents=True, exist_ok=True)
    (workdir / "outputs").mkdir(parents=True, exist_ok=True)
    try:
        from werkzeug.serving import make_server

        server: Any = make_server("127.0.0.1", port, flask_app(workdir), threaded=True)
    except ImportError:
        handler = type("Handler", (_Handler,), {"workdir": workdir})
        server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    print(f"seed baseline ({server_kind()}) listening on 127.0.0.1:{port}", flush=True)
    server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    args = parser.parse_args()
    serve(args.port, args.workdir)


if __name__ == "__main__":
    main()
