#!/usr/bin/env bash
# Train the three toy models on one GPU within one call: the VAE first, then the editor and the
# multi-view model side by side (they share the VAE, and neither fills an H200 alone).
#   bash train/run_all.sh OUT_DIR [VAE_MINUTES] [MINUTES]      (VAE_MINUTES 0: keep INIT_VAE)
# INIT_VAE / INIT_EDITOR / INIT_SEVA = model folders to continue from (earlier runs' weights).
# The editor and SEVA train from a fixed set rendered once (--cache): on the H200 in session 4, making
# data on the fly held them to 0.4-0.6 s per step with the GPU mostly idle (docs/performance.md).
# EDITOR_BATCH / SEVA_BATCH: pairs / windows per step (128 / 32).
# EDITOR_CACHE / SEVA_CACHE change the set sizes (pairs / 8-view windows; 0 = render every batch).
# COMPILE=1: torch.compile the editor's and SEVA's training forward (launch-bound on an H200; untried there).
# VAE_LR: the VAE's learning rate (continuing with INIT_VAE, a lower one keeps the latent space the
# editor and SEVA were trained in close to where it was).
set -u
out=${1:?output folder for the .tar files and logs}
vae_min=${2:-2.3}
min=${3:-5.8}
py=${PYTHON:-python3}
work=/tmp/toy_models
mkdir -p "$out" "$work"
export PYTHONUNBUFFERED=1
if [ "$vae_min" = 0 ]; then  # keep INIT_VAE as it is: the editor and SEVA continue in its latent space
  rm -rf $work/vae-toy && cp -r "${INIT_VAE:?VAE_MINUTES 0 needs INIT_VAE}" $work/vae-toy
else
  $py train/train_vae.py --out $work --minutes "$vae_min" --batch 64 --lr "${VAE_LR:-1e-3}" --reuse 2 --pack "$out" ${INIT_VAE:+--init "$INIT_VAE"} \
    2>&1 | tee "$out/vae.log" | grep -v shards
fi
$py train/train_editor.py --vae $work/vae-toy --out $work --minutes "$min" --batch "${EDITOR_BATCH:-128}" --lr 4e-4 --cache "${EDITOR_CACHE:-16384}" --pack "$out" \
  ${INIT_EDITOR:+--init "$INIT_EDITOR"} ${COMPILE:+--compile} > "$out/editor.log" 2>&1 &
$py train/train_seva.py --vae $work/vae-toy --out $work --minutes "$min" --batch "${SEVA_BATCH:-32}" --lr 4e-4 --cache "${SEVA_CACHE:-3072}" --pack "$out" \
  ${INIT_SEVA:+--init "$INIT_SEVA"} ${COMPILE:+--compile} > "$out/seva.log" 2>&1 &
wait
tail -n 3 "$out/editor.log" "$out/seva.log"
