#!/usr/bin/env bash
# Install upstream CosyVoice's inference stack, and then this project, into the active Python
# environment. The one recipe for both places that need it: the GPU image (ops/docker/gpu.Dockerfile)
# and the upstream test environment (`make upstream-env`, which runs the adapter through the real
# upstream code on a CPU, in CI).
#
#   ops/docker/install_cosyvoice.sh <CosyVoice source dir> <this project's dir>
#
# <CosyVoice source dir> holds upstream's requirements.txt and `cosyvoice/`. Environment:
#   COSYVOICE_EXTRA_INDEXES=1  keep the extra package indexes upstream's requirements.txt names (the
#                              CUDA builds of torch and onnxruntime; the GPU image). Default 0: PyPI
#                              only, whose Linux torch 2.3.1 is the CUDA 12.1 build, and runs on a CPU.
#   COSYVOICE_IMPORT_PATH      what PYTHONPATH needs for `import cosyvoice, matcha` (the final check);
#                              default: the source dir and its third_party/Matcha-TTS.
#   COSYVOICE_WETEXT_DIR       where to write the text-normalisation FST files the worker reads
#                              (ops/docker/fetch_wetext.py); unset: none are written.
set -euo pipefail

src=${1:?usage: install_cosyvoice.sh <CosyVoice source dir> <project dir>}
project=${2:?usage: install_cosyvoice.sh <CosyVoice source dir> <project dir>}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pip() { python -m pip --disable-pip-version-check --no-input "$@"; }

# openai-whisper==20231117 is an sdist whose setup.py imports pkg_resources, which setuptools 81
# removed; new pips no longer pass constraints into the isolated environments they build in. So it is
# built first, without isolation, against setuptools<81 installed here; its dependencies (torch
# among them, unpinned there) come with the rest below, at upstream's pins.
pip install --upgrade "pip>=24" wheel "setuptools<81"
whisper=$(grep -iE '^openai-whisper==' "$src/requirements.txt")
pip install --no-build-isolation --no-deps "$whisper"

# Upstream's requirements, less what inference with load_trt=False never imports: training
# (deepspeed, tensorboard), web demos (gradio, fastapi, uvicorn), TensorRT; less pyworld, whose sdist
# fails to build with current setuptools and which inference never imports (our espeak engine does:
# the project's prebuilt wheel of the same module comes with the project below).
keep_indexes=${COSYVOICE_EXTRA_INDEXES:-0}
grep -viE '^(deepspeed|gradio|fastapi(-cli)?|uvicorn|tensorboard|tensorrt[-a-z0-9]*|pyworld)(==|[ ;]|$)' \
    "$src/requirements.txt" \
    | { if [ "$keep_indexes" = 1 ]; then cat; else grep -v -- '^--extra-index-url'; fi; } \
    > "$work/cosyvoice.txt"
pip install -r "$work/cosyvoice.txt"

# This project, on upstream's NumPy. pyproject pins numpy 2.x and upstream numpy==1.26.4; its torch
# 2.3.1 and onnxruntime 1.18 are built against NumPy 1.x and fail to import under 2.x. The model's
# stack wins (moving torch would leave the set upstream tested), and our code only uses NumPy that
# 1.26 has. So numpy stays out of our list and is constrained to the installed version (pip fails
# rather than upgrade it), onnxruntime stays out (onnxruntime-gpu provides the same module), and of
# the `voice` extra only pyworld-prebuilt comes in (torch 2.13 and Resemblyzer would replace
# upstream's torch: without them the worker runs without its speaker-similarity signal).
python -c "import numpy; print(f'numpy=={numpy.__version__}')" > "$work/constraints.txt"
python - "$project/pyproject.toml" > "$work/voicerelay.txt" <<'EOF'
import re
import sys
import tomllib

project = tomllib.load(open(sys.argv[1], "rb"))["project"]
def name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower()
wanted = [d for d in project["dependencies"] if name(d) not in {"numpy", "onnxruntime"}]
wanted += [d for d in project["optional-dependencies"]["voice"] if name(d) == "pyworld-prebuilt"]
print("\n".join(wanted))
EOF
pip install -c "$work/constraints.txt" -r "$work/voicerelay.txt"

if [ -n "${COSYVOICE_WETEXT_DIR:-}" ]; then
    python "$project/ops/docker/fetch_wetext.py" "$COSYVOICE_WETEXT_DIR"
fi

# What the worker imports, imported: a broken set fails here, not at the first job. The providers
# onnxruntime offers are printed, so an image whose speech tokenizer would run on the CPU is seen.
PYTHONPATH="${COSYVOICE_IMPORT_PATH:-$src:$src/third_party/Matcha-TTS}:$project" python -c "
import numpy, onnxruntime, torch
assert numpy.__version__ == '1.26.4', numpy.__version__
import cosyvoice.cli.cosyvoice, synth_worker.engines.cosyvoice3
print('cosyvoice stack: torch', torch.__version__, 'cuda', torch.cuda.is_available(),
      '| onnxruntime', onnxruntime.__version__, onnxruntime.get_available_providers())
"
