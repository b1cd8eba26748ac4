#!/usr/bin/env bash
# Installs the Debian packages NeuMeta Cluster needs (as root, or through sudo), once.
set -euo pipefail
# slurm-wlm and munge: SlurmClusterTests runs deploy/slurm/neumeta.sbatch on a one-node Slurm that
# deploy/slurm/local-cluster.sh starts with a configuration of its own (the packages' own
# services are not used).
packages=(libzmq3-dev libsodium-dev libopenblas-dev libjpeg-dev libpng-dev zlib1g-dev pkg-config
          dataset-fashion-mnist iproute2 slurm-wlm munge)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  sudo_cmd=(); [ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi
