#!/usr/bin/env bash
# Create .venv (if missing) and install BPMT with its test extras.
# torch is pinned to the CPU build that lies on the development machines' disk; elsewhere any
# torch >= 2.4 works (install it first, then `pip install -e .`).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q "torch==${BPMT_TORCH_VERSION:-2.13.0}"
python -m pip install -q -e ".[test,video,onnx]"
# MediaPipe 0.10.21 (the last release that ships its pose models in the wheel) declares numpy<2,
# jax and a GUI OpenCV it does not need for pose estimation: install it alone, without them.
python -m pip install -q --no-deps "mediapipe==0.10.21"
