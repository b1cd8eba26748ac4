#!/usr/bin/env bash
# The main job, on one machine: installs what is missing, builds (release), trains the base
# LeNet (width 32, 5 epochs) on Fashion-MNIST, permutes it and trains the NeuMeta INR over
# widths 8…32 (default recipe), then evaluates sampled networks across widths and writes the
# table and plot under runs/. Stages whose output exists are skipped (delete runs/ to redo).
# Environment: EPOCHS (INR epochs, default 6), RECIPE (default|paper).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
swift build -c release --product neumeta-coordinator
bin=.build/release/neumeta-coordinator
mkdir -p runs
[ -f runs/lenet-32.safetensors ] || "$bin" train-base --width 32 --epochs 5 --out runs/lenet-32.safetensors
inr="runs/inr-${RECIPE:-default}.safetensors"
[ -f "$inr" ] || "$bin" train --base runs/lenet-32.safetensors --epochs "${EPOCHS:-6}" --recipe "${RECIPE:-default}" --out "$inr"
"$bin" evaluate --inr "$inr" --widths 4,8,12,16,20,24,28,32,40,48 --samples 10
