# GPU synthesis worker (TTS_ENGINE=cosyvoice3): CUDA runtime + Python 3.11 + torch + a pinned CosyVoice
# checkout on PYTHONPATH + this project. Built by the `worker-gpu` service (compose profile `gpu`);
# build context: the repository root.
#
# The cosyvoice3 engine code itself is not in this version of VoiceRelay (synth_worker refuses to load it),
# so this image is the environment it will run in, not yet a working GPU worker.
#
# Why CosyVoice is cloned rather than pip-installed: the official code is not a package (DESIGN.md,
# "CosyVoice3 facts"); it is imported from /opt/CosyVoice and its Matcha-TTS submodule via PYTHONPATH.
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
# CosyVoice dependencies that build from source (pyworld, openai-whisper); ffmpeg/sox for torchaudio I/O.
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
# deepspeed, tensorboard; web demos: gradio, fastapi, uvicorn; TensorRT) and less torch/torchaudio
# (installed above from the CUDA index).
RUN grep -viE '^(deepspeed|gradio|fastapi(-cli)?|uvicorn|tensorboard|tensorrt[-a-z0-9]*|torch|torchaudio)(==|[ ;]|$)' \
        /opt/CosyVoice/requirements.txt > /tmp/cosyvoice-requirements.txt \
    && pip install -r /tmp/cosyvoice-requirements.txt
ENV PYTHONPATH=/opt/CosyVoice:/opt/CosyVoice/third_party/Matcha-TTS

# This project. CONFLICT: CosyVoice pins numpy==1.26.4 (its torch 2.3.1 and onnxruntime-gpu 1.18 are
# built against NumPy 1.x) while pyproject pins numpy==2.4.6. The image keeps NumPy 1.26.4: the project's
# other dependencies are installed from pyproject without numpy, then the project itself with --no-deps.
# Until the cosyvoice3 engine lands with a resolved pin, VoiceRelay on NumPy 1.26 here is untested.
COPY pyproject.toml README.md /src/
COPY common /src/common
COPY events /src/events
COPY storage /src/storage
COPY wechat_adapter /src/wechat_adapter
COPY synth_worker /src/synth_worker
COPY ops /src/ops
RUN python -c "import tomllib; deps = tomllib.load(open('/src/pyproject.toml', 'rb'))['project']['dependencies']; print('\n'.join(d for d in deps if not d.startswith('numpy')))" \
        > /tmp/voicerelay-requirements.txt \
    && pip install -r /tmp/voicerelay-requirements.txt \
    && pip install --no-deps /src \
    && rm -rf /src /tmp/*.txt \
    && useradd --system --uid 10001 --home-dir /app --create-home voicerelay

WORKDIR /app
USER voicerelay
EXPOSE 9108
CMD ["python", "-m", "synth_worker"]
