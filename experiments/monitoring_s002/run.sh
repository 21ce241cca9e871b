#!/usr/bin/env bash
# Monitoring check on real Sentinel-2: site s002 (48 dates, 2019-2024, hand masks on each).
# A U-Net is fine-tuned on the hand masks of the OTHER sites (s003, s004; s002 is held out;
# validation = a quarter of their ~1 km blocks, as each site is a single place),
# `monitor` follows s002 through time, and the area series of model and hand masks are
# compared (compare.py). Needs ../shared/data (RTS_SSL_SHARED_DATA). ~15 min on 2 CPU cores.
# Usage: bash experiments/monitoring_s002/run.sh [out dir]
set -euo pipefail
out=${1:-outputs/monitoring_s002}
site=${RTS_SSL_SHARED_DATA:-../shared/data}/sentinel2_arctic_slump_sites
common=(data=sentinel2_sites data.prepared="$out/prepared" paths.log_dir="$out")
if ! ls -d "$out"/finetune/*/model >/dev/null 2>&1; then
  python -m rts_ssl finetune "${common[@]}" 'split.test_regions=[s002]' split.group=location_id \
    trainer.max_epochs=20 input_size=64 logger.mode="${RTS_SSL_WANDB_MODE:-offline}"
fi
model=$(ls -d "$out"/finetune/*/model | tail -1)
python -m rts_ssl monitor checkpoint="$model" input="$site/scenes/s002" output="$out/monitor" \
  window=64 overlap=32
python -m rts_ssl evaluate checkpoint="$model" input="$site/scenes/s002" \
  mask="$site/masks/s002" output="$out/evaluate_s002.json" window=64 overlap=32
python "$(dirname "$0")/compare.py" "$out/monitor" "$site/masks/s002" "$(dirname "$0")"
