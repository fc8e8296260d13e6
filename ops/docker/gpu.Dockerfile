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

# torch/torchaudio from the CUDA 12.1 index first, so upstream's pins find them installed.
RUN pip install --upgrade pip \
    && pip install "torch==${TORCH_VERSION}" "torchaudio==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"

# CosyVoice at a pinned commit, with its Matcha-TTS submodule (GitHub serves a commit by id to a shallow fetch).
RUN git init -q /opt/CosyVoice \
    && cd /opt/CosyVoice \
    && git remote add origin https://github.com/FunAudioLLM/CosyVoice \
    && git fetch -q --depth 1 origin "${COSYVOICE_COMMIT}" \
    && git checkout -q FETCH_HEAD \
    && git submodule update -q --init --recursive --depth 1 \
    && rm -rf .git
ENV PYTHONPATH=/opt/CosyVoice:/opt/CosyVoice/third_party/Matcha-TTS \
    COSYVOICE_WETEXT_DIR=/opt/wetext

# Upstream's inference requirements, then this project on upstream's NumPy, the text-normalisation
# files (the worker never downloads them), and an import check: one script, ops/docker/install_cosyvoice.sh,
# which `make upstream-env` runs too, so CI builds the same set on a CPU and tests the engine in it.
COPY pyproject.toml README.md /src/
COPY common /src/common
COPY events /src/events
COPY storage /src/storage
COPY wechat_adapter /src/wechat_adapter
COPY synth_worker /src/synth_worker
COPY ops /src/ops
RUN COSYVOICE_EXTRA_INDEXES=1 bash /src/ops/docker/install_cosyvoice.sh /opt/CosyVoice /src \
    && pip install --no-deps /src \
    && rm -rf /src \
    && useradd --system --uid 10001 --home-dir /app --create-home voicerelay

WORKDIR /app
USER voicerelay
EXPOSE 9108
CMD ["python", "-m", "synth_worker"]
