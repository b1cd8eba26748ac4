#!/usr/bin/env bash
# The main job: installs what is missing, builds (release), then runs the default experiment of
# cluster.yaml on this machine as a real cluster — the coordinator starts workers.local worker
# processes that connect to it over CURVE-encrypted ZeroMQ. It trains the base LeNet (width 32,
# 5 epochs) unless runs/lenet-32.safetensors exists, permutes it, trains the NeuMeta INR over
# widths 8…32 in distributed rounds, then evaluates sampled networks across widths and writes
# the table and plot (runs/cluster-eval.{csv,md,svg}). Extra arguments go to `run`
# (e.g. --resume, --local-workers 1, --epochs 2).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
swift build -c release --product neumeta-coordinator
swift build -c release --product neumeta-worker
exec .build/release/neumeta-coordinator run --config cluster.yaml "$@"
