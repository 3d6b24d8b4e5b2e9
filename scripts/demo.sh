#!/usr/bin/env bash
# Install (into .venv) and run the main job: synthesise walkers, train all three phases, evaluate.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
bpmt demo "$@"
