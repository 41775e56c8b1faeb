#!/usr/bin/env bash
# The CUDA checks and GPU figures, in one run on a machine with a CUDA GPU (6 minutes on an H200;
# its figures of 2026-11-27 are in bench/gpu_check_h200.log and the bundled model's card): the CUDA tests (engine on GPU = CPU masks, training on GPU + resume, the bundled
# model's held-out Dice on GPU = its card's), inference seconds per lesion, and training throughput
# of the bundled model's fine-tuning recipe and of the full-size ResEnc-L recipe.
#
#   bash bench/gpu_check.sh [PYTHON]      # PYTHON: an interpreter with the package's dependencies
#                                         # (default .venv/bin/python, else python3)
# Each step has its own time limit and a failing step does not stop the others; the exit status
# is the number of failed steps.
set -u
cd "$(dirname "$0")/.."
PY=${1:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
export PYTHONUNBUFFERED=1
failed=0
# nnU-Net's per-epoch log lines, banners and plans dumps: dropped from the output, the figures stay.
NOISE='^DEBUG |^[0-9]{4}-[0-9]{2}-[0-9]{2} |^ *$|^#+$|Please cite|Isensee|^ ?\{|^This is the|^These are|^Configuration|^Using |^Dataset990|verify_dataset|If you did|^Preprocessing'
step() {  # step SECONDS TITLE COMMAND...
    local limit=$1 title=$2 status; shift 2
    echo; echo "=== $title ($(date +%T))"
    local start=$SECONDS
    timeout "$limit" "$@" 2>&1 | grep -v -E "$NOISE"
    status=${PIPESTATUS[0]}
    [ "$status" = 0 ] || { echo "!!! step failed (exit $status): $title"; failed=$((failed + 1)); }
    echo "=== $title: $((SECONDS - start)) s"
}

step 30 environment bash -c "nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; $PY -c '
import platform, torch, nnunetv2, SimpleITK, numpy
from importlib.metadata import version
print(\"python\", platform.python_version(), \"torch\", torch.__version__, \"cuda\", torch.version.cuda,
      \"cudnn\", torch.backends.cudnn.version(), \"nnunetv2\", version(\"nnunetv2\"), \"SimpleITK\", SimpleITK.__version__,
      \"numpy\", numpy.__version__)
print(\"device:\", torch.cuda.get_device_name(), \"cuda available:\", torch.cuda.is_available())'"
step 200 "CUDA tests (pytest -m cuda; nnU-Net's default torch.compile on)" $PY -m pytest -m cuda \
    -p no:cacheprovider -q -rfEs -s tests/segment/test_nnunet_cuda.py tests/train/test_train_cuda.py
# The throughput figures below leave torch.compile off (nnUNet_compile=f) so that its minutes of
# compiling fit the step's time limit; nnU-Net compiles by default on a GPU, which is faster still.
export nnUNet_compile=f
step 100 "training: bundled model's fine-tuning recipe on cuda" $PY bench/bench_train.py --device cuda \
    --config config/train_small_finetune.yaml --init-from models/lesionlocator_small --patients 24 --iters 250 \
    --epochs 3 --workers 12 --threads 4 --skip-random
step 130 "training: full-size ResEnc-L recipe on cuda" $PY bench/bench_train.py --device cuda \
    --config config/train_resenc_l.yaml --patients 24 --iters 30 --epochs 3 --workers 12 --threads 4 --skip-random
step 50 "inference: bundled model on cuda" $PY bench/bench_segment.py --segmenter bundled --device cuda \
    --scans 1 --lesions 6 --threads 8
step 30 "inference: random ResEnc, patch 128^3, on cuda" $PY bench/bench_segment.py --segmenter nnunet \
    --device cuda --patch 128 --threads 8
echo; echo "failed steps: $failed"
exit "$failed"
