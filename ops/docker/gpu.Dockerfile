# GPU synthesis worker (TTS_ENGINE=cosyvoice3): CUDA runtime + Python 3.11 + torch + a pinned CosyVoice
# checkout on PYTHONPATH + this project. Built by the `worker-gpu` service (compose profile `gpu`);
# build context: the repository root.
#
# The engine is synth_worker/engines/cosyvoice3.py. On a GPU host with the weights, check an image with
#   docker compose --profile gpu run --rm worker-gpu python -m ops gpu-smoke
#
# Why CosyVoice is cloned rather than pip-installed: the official code is not a package
# (docs/COSYVOICE3.md); it is imported from /opt/CosyVoice and its Matcha-TTS submodule via PYTHONPATH.
# Model weights are NOT baked in: they are mounted read-only at /models (COSYVOICE_MODEL_HOST_DIR).
FROM nvidia/cuda:12.1.1-cudnn8-runtime-ubuntu22.04

# The CosyVoice commit whose requirements.txt this file was written against. Bump deliberately.
ARG COSYVOICE_COMMIT=04bcadc6340e266b4ba09f4474b4668c444aa063
# torch/torchaudio as pinned by that commit, CUDA 12.1 wheels.
ARG TORCH_VERSION=2.3.1
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu121

ENV DEBIAN_FRONTEND=noninteractive PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1

# Python 3.11 from Ubuntu 22.04 (universe); git for the checkout; a compiler and headers for the
# CosyVoice dependencies that build from source (openai-whisper); ffmpeg/sox for torchaudio I/O.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        python3.11 python3.11-venv python3.11-dev build-essential git ca-certificates ffmpeg sox libsox-dev \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

RUN pip install --upgrade pip setuptools wheel \
    && pip install "torch==${TORCH_VERSION}" "torchaudio==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"

# CosyVoice at a pinned commit, with its Matcha-TTS submodule (GitHub serves a commit by id to a shallow fetch).
RUN git init -q /opt/CosyVoice \
    && cd /opt/CosyVoice \
    && git remote add origin https://github.com/FunAudioLLM/CosyVoice \
    && git fetch -q --depth 1 origin "${COSYVOICE_COMMIT}" \
    && git checkout -q FETCH_HEAD \
    && git submodule update -q --init --recursive --depth 1 \
    && rm -rf .git
# Its requirements, less what inference with load_trt=False / load_vllm=False never imports (training:
# deepspeed, tensorboard; web demos: gradio, fastapi, uvicorn; TensorRT), less torch/torchaudio
# (installed above from the CUDA index), and less pyworld: its sdist fails on import with current
# setuptools and CosyVoice inference never imports it, while our espeak engine (which
# `python -m ops` imports) does, so the project's prebuilt wheel of the same module goes in below.
RUN grep -viE '^(deepspeed|gradio|fastapi(-cli)?|uvicorn|tensorboard|tensorrt[-a-z0-9]*|torch|torchaudio|pyworld)(==|[ ;]|$)' \
        /opt/CosyVoice/requirements.txt > /tmp/cosyvoice-requirements.txt \
    && pip install -r /tmp/cosyvoice-requirements.txt
ENV PYTHONPATH=/opt/CosyVoice:/opt/CosyVoice/third_party/Matcha-TTS

# This project, on CosyVoice's NumPy. pyproject pins numpy==2.4.6 and CosyVoice numpy==1.26.4; its
# torch 2.3.1 and onnxruntime-gpu 1.18 are built against NumPy 1.x and fail to import under 2.x.
# The model's stack wins (moving torch would leave the set upstream tested), and our code only uses
# NumPy that 1.26 has; no dependency of ours asks for NumPy 2. So:
# - numpy stays out of our list and is constrained to the installed version: pip fails the build
#   rather than upgrade it if a dependency ever wants 2.x;
# - onnxruntime stays out: onnxruntime-gpu provides the same module, the CPU wheel would overwrite it;
# - pyworld-prebuilt comes in from the `voice` extra (see above); the rest of that extra (torch 2.13,
#   Resemblyzer) does not: without it the worker runs without its speaker-similarity signal.
# The last step imports what the worker and `python -m ops` import, so a broken set fails the build.
COPY pyproject.toml README.md /src/
COPY common /src/common
COPY events /src/events
COPY storage /src/storage
COPY wechat_adapter /src/wechat_adapter
COPY synth_worker /src/synth_worker
COPY ops /src/ops
RUN python -c "import numpy; print(f'numpy=={numpy.__version__}')" > /tmp/constraints.txt \
    && python -c "import re, tomllib; \
project = tomllib.load(open('/src/pyproject.toml', 'rb'))['project']; \
name = lambda req: re.split(r'[<>=!~\[; ]', req, maxsplit=1)[0].lower(); \
deps = [d for d in project['dependencies'] if name(d) not in {'numpy', 'onnxruntime'}]; \
deps += [d for d in project['optional-dependencies']['voice'] if name(d) == 'pyworld-prebuilt']; \
print('\n'.join(deps))" > /tmp/voicerelay-requirements.txt \
    && pip install -c /tmp/constraints.txt -r /tmp/voicerelay-requirements.txt \
    && pip install --no-deps /src \
    && rm -rf /src /tmp/*.txt \
    && python -c "import numpy, onnxruntime, torch; assert numpy.__version__ == '1.26.4', numpy.__version__; \
import cosyvoice.cli.cosyvoice, synth_worker.worker, synth_worker.engines.cosyvoice3; \
from ops.cli import build_parser; build_parser()" \
    && useradd --system --uid 10001 --home-dir /app --create-home voicerelay

WORKDIR /app
USER voicerelay
EXPOSE 9108
CMD ["python", "-m", "synth_worker"]
