#!/usr/bin/env bash
# Label efficiency on the synthetic default: SimCLR vs MAE vs random init (vit_tiny),
# fine-tuned on growing label fractions, tested on the held-out region (yamal).
# ~20 minutes on 2 CPU cores. Usage: bash experiments/label_efficiency_synthetic/run.sh [out dir]
set -euo pipefail
out=${1:-outputs/label_efficiency_synthetic}
run() { python -m rts_ssl "$@" paths.log_dir="$out" logger.mode="${RTS_SSL_WANDB_MODE:-offline}"; }
for ssl in simclr mae; do
  [ -d "$out/pretrain/$ssl-vit_tiny-synthetic_planet" ] && continue
  run pretrain ssl=$ssl encoder=vit_tiny trainer.max_epochs=8 samples_per_epoch=512
done
simclr=$(ls -d "$out"/pretrain/simclr-vit_tiny-synthetic_planet/*/encoder | tail -1)
mae=$(ls -d "$out"/pretrain/mae-vit_tiny-synthetic_planet/*/encoder | tail -1)
run curve "pretrained=[$simclr,$mae,none]" encoder=vit_tiny \
  "fractions=[0.1,0.25,1.0]" "seeds=[0,1]" "finetune=['trainer.max_epochs=4','samples_per_epoch=192']"
python -m rts_ssl compare "$out/curve/synthetic_planet"
