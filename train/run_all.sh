#!/usr/bin/env bash
# Train the three toy models on one GPU within one call: the VAE first, then the editor and the
# multi-view model side by side (they share the VAE, and neither fills an H200 alone).
#   bash train/run_all.sh OUT_DIR [VAE_MINUTES] [MINUTES]
# INIT_VAE / INIT_EDITOR / INIT_SEVA = model folders to continue from (earlier runs' weights).
set -u
out=${1:?output folder for the .tar files and logs}
vae_min=${2:-2.3}
min=${3:-5.8}
py=${PYTHON:-python3}
work=/tmp/toy_models
mkdir -p "$out" "$work"
export PYTHONUNBUFFERED=1
$py train/train_vae.py --out $work --minutes "$vae_min" --batch 64 --lr 1e-3 --reuse 2 --pack "$out" ${INIT_VAE:+--init "$INIT_VAE"} \
  2>&1 | tee "$out/vae.log" | grep -v shards
$py train/train_editor.py --vae $work/vae-toy --out $work --minutes "$min" --batch 128 --lr 4e-4 --reuse 2 --pack "$out" \
  ${INIT_EDITOR:+--init "$INIT_EDITOR"} > "$out/editor.log" 2>&1 &
$py train/train_seva.py --vae $work/vae-toy --out $work --minutes "$min" --batch 32 --lr 4e-4 --reuse 2 --pack "$out" \
  ${INIT_SEVA:+--init "$INIT_SEVA"} > "$out/seva.log" 2>&1 &
wait
tail -n 3 "$out/editor.log" "$out/seva.log"
