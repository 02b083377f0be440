#!/usr/bin/env bash
# The ddpm command-line tool, end to end.
#
#   examples/cli_usage.sh [MODEL] [OUT]        (defaults: $DDPM_MODEL, else the bundled ddpm-mnist; ./cli-demo)
#   examples/cli_usage.sh google/ddpm-cifar10-32                    # a Hub model (downloaded once, then cached)
#
# With no arguments it runs offline on the bundled model. DDPM_CLI chooses how to call the tool (default: "ddpm";
# "python -m ddpm" works too), DDPM_STEPS the step count.
set -euo pipefail

if [[ "${1:-}" == -h || "${1:-}" == --help ]]; then
    sed -n '2,8p' "$0" | cut -c3-
    exit 0
fi

MODEL="${1:-${DDPM_MODEL:-ddpm-mnist}}"
OUT="${2:-cli-demo}"
DDPM="${DDPM_CLI:-ddpm}"
STEPS="${DDPM_STEPS:-50}"

# What the checkpoint holds: configs, parameter count, files (reads only the small JSON files).
$DDPM info "$MODEL"

# Eight images with DDIM, four per UNet call, plus a grid. Image i is made from seed 0+i.
$DDPM sample "$MODEL" --scheduler ddim --steps "$STEPS" --num-images 8 --batch-size 4 --seed 0 \
    --out "$OUT/ddim" --grid "$OUT/ddim-grid.png" --no-progress

# Asking for more images into the same folder only makes the missing ones (8..11); the first eight are kept.
$DDPM sample "$MODEL" --scheduler ddim --steps "$STEPS" --num-images 12 --batch-size 4 --seed 0 \
    --out "$OUT/ddim" --no-progress

# PNDM on the fast path: bf16 on CUDA and on CPUs with native bf16, fp32 elsewhere (emulated bf16 is slower).
# --dtype bf16 asks for bf16 everywhere; on a GPU add --device cuda.
$DDPM sample "$MODEL" --scheduler pndm --steps "$STEPS" --num-images 4 --fast \
    --out "$OUT/pndm-fast" --no-progress

# Several processes share the work (each takes every K-th image); the files equal a one-process run's:
#   torchrun --nproc-per-node 2 -m ddpm sample "$MODEL" --scheduler ddim --num-images 8 --out "$OUT/ddim"

ls "$OUT/ddim"
