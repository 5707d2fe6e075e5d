#!/usr/bin/env bash
# The HGRU ablation: train each variant by the recipe (stage 2 of ./run.sh, the recipe's
# conf/hgru.yaml with the variant's --set overrides), score dev and test (and their
# conditions, where the data dir has them), and write one table (bench/compare_models.py
# ablation): best dev accuracy (what chooses), test accuracy, EER, min-Cavg, parameters,
# seconds per epoch and training time, then the accuracy on each condition.
#
#   bench/hgru_variants.sh                                   # every variant below
#   bench/hgru_variants.sh --variants "base stats" --exp-dir exp_variants
#   bench/hgru_variants.sh --epochs 20                       # a shorter budget for all
#   bench/hgru_variants.sh --front-end whisper-base --train-augment-opts none \
#       --data-dir data --exp-dir exp_variants_whisper       # on encoder states, clean train
#
# A variant is "name:key=value,key=value" (keys of `lre train --set`) over the recipe as it
# is now; a variant whose model dir already has final.pt is only re-scored. "nofront" is the
# recipe without its convolutional front (36 epochs), on which conv2_stats ... heads4 were
# measured: add model.front=none,train.epochs=36 to them to repeat those figures. The
# variants above "overlap" were measured over the recipe with overlapping level-1 windows:
# add model.window_shift=10,model.segment_windows=10 (and train.epochs=19 where they set
# no epochs) to repeat theirs.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

all_variants=(
  "base:"
  "nofront:model.front=none,train.epochs=36"
  "conv2_stats:model.front=conv,model.front_stride=2,model.pooling=stats"
  "conv2_stats_norm:model.front=conv,model.front_stride=2,model.pooling=stats,model.layer_norm=true"
  "conv2:model.front=conv,model.front_stride=2"
  "stats:model.pooling=stats"
  "conv2_stats_96:model.front=conv,model.front_stride=2,model.pooling=stats,model.hidden1=96,model.hidden2=96,model.hidden3=80,model.attention=48,model.dense=192"
  "deep2_96_stats:model.front=conv,model.front_stride=2,model.front_layers=2,model.front_channels=96,model.pooling=stats"
  "conv2_stats_segloss:model.front=conv,model.front_stride=2,model.pooling=stats,optim.segment_loss=0.3"
  "wide23:model.hidden2=128,model.hidden3=96,model.attention=64,model.dense=256"
  "segloss:optim.segment_loss=0.3"
  "norm:model.layer_norm=true"
  "bi2:model.segment_bidirectional=true"
  "segmean:model.segment_pooling=mean"
  "segstats:model.segment_pooling=stats"
  "bi1:model.window_bidirectional=true"
  "crops36:data.crop_min_seconds=3,data.crop_max_seconds=6"
  "winmean:model.window_pooling=mean"
  "winmean_bi1:model.window_pooling=mean,model.window_bidirectional=true"
  "winstats:model.window_pooling=stats"
  "bi1_32:model.window_bidirectional=true,model.hidden1=32"
  "bi1_48:model.window_bidirectional=true,model.hidden1=48"
  "heads4:model.attention_heads=4"
  "convln1:model.front=conv,model.front_stride=2,model.front_channels=128,model.front_norm=layer"
  "convln2:model.front=conv,model.front_stride=2,model.front_layers=2,model.front_channels=128,model.front_norm=layer"
  "convln2_e18:model.front=conv,model.front_stride=2,model.front_layers=2,model.front_channels=128,model.front_norm=layer,train.epochs=18"
  "convln2_64_e24:model.front=conv,model.front_stride=2,model.front_layers=2,model.front_channels=64,model.front_norm=layer,train.epochs=24"
  "convln3_e16:model.front=conv,model.front_stride=2,model.front_layers=3,model.front_channels=128,model.front_norm=layer,train.epochs=16"
  "convln2s1:model.front=conv,model.front_layers=2,model.front_channels=128,model.front_norm=layer"
  "convln3_64_e20:model.front=conv,model.front_stride=2,model.front_layers=3,model.front_channels=64,model.front_norm=layer,train.epochs=20"
  "convln2_96_e20:model.front=conv,model.front_stride=2,model.front_layers=2,model.front_channels=96,model.front_norm=layer,train.epochs=20"
  "ls01:optim.label_smoothing=0.1"
  "drop02:model.dropout=0.2"
  "adamw01:optim.name=adamw,optim.weight_decay=0.01"
  "masks:augment.freq_masks=2,augment.time_masks=2"
  "masks_e28:augment.freq_masks=2,augment.time_masks=2,train.epochs=28"
  "seed1:train.seed=1"
  "masks_e28_seed1:augment.freq_masks=2,augment.time_masks=2,train.epochs=28,train.seed=1"
  "masks_e24:augment.freq_masks=2,augment.time_masks=2,train.epochs=24"
  "masks_e24_seed1:augment.freq_masks=2,augment.time_masks=2,train.epochs=24,train.seed=1"
  "masks_e28_crop3:augment.freq_masks=2,augment.time_masks=2,train.epochs=28,data.crop_max_seconds=3"
  "masks_e28_crop3_seed1:augment.freq_masks=2,augment.time_masks=2,train.epochs=28,data.crop_max_seconds=3,train.seed=1"
  "masks_e26:augment.freq_masks=2,augment.time_masks=2,train.epochs=26"
  "masks_e26_seed1:augment.freq_masks=2,augment.time_masks=2,train.epochs=26,train.seed=1"
  "masks_e28_b48:augment.freq_masks=2,augment.time_masks=2,train.epochs=28,data.batch_size=48,optim.lr=0.006"
  "masks1_e22:augment.freq_masks=1,augment.time_masks=1,train.epochs=22"
  "masks1_e22_seed1:augment.freq_masks=1,augment.time_masks=1,train.epochs=22,train.seed=1"
  "recipe_crop3_e24:data.crop_max_seconds=3,train.epochs=24"
  # over the recipe as it is now: weight averaging of the last 6 epochs (final.pt holds
  # the average), label smoothing 0.05
  "avg6:train.average_last=6,train.final_weights=average"
  "ls005:optim.label_smoothing=0.05"
  "ls005_seed1:optim.label_smoothing=0.05,train.seed=1"
  "seed2:train.seed=2"
  "ls005_seed2:optim.label_smoothing=0.05,train.seed=2"
  # for a training set of 6 copies (speed 0.9x and 1.1x beside the recipe's 4): the
  # recipe's number of steps
  "e19:train.epochs=19"
  "e19_seed1:train.epochs=19,train.seed=1"
  # level-1 windows side by side instead of overlapping by half (window_shift = window:
  # level 1 runs over each frame once, 30% less time a step), the time spent on more
  # epochs or a wider level 1; still 1 s segments (5 windows of 200 ms). nov_e32 is the
  # recipe now; "overlap" the recipe before it
  "overlap:model.window_shift=10,model.segment_windows=10,train.epochs=19"
  "nov_e27:model.window_shift=20,model.segment_windows=5,train.epochs=27"
  "nov_h96_e22:model.window_shift=20,model.segment_windows=5,model.hidden1=96,train.epochs=22"
  "nov_k3_h96_e23:model.window_shift=20,model.segment_windows=5,model.front_kernel=3,model.hidden1=96,train.epochs=23"
  "nov_e32:model.window_shift=20,model.segment_windows=5,train.epochs=32"
  "nov_e32_seed1:model.window_shift=20,model.segment_windows=5,train.epochs=32,train.seed=1"
)
variants=
recipe=synth
data_dir=data
exp_dir=exp_variants
epochs=
front_end=fbank
train_augment_opts=
while [ $# -gt 0 ]; do
  case "$1" in
    --variants) variants=$2; shift 2 ;;
    --recipe) recipe=$2; shift 2 ;;
    --data-dir) data_dir=$2; shift 2 ;;
    --exp-dir) exp_dir=$2; shift 2 ;;
    --epochs) epochs=$2; shift 2 ;;
    --front-end) front_end=$2; shift 2 ;;
    --train-augment-opts) train_augment_opts=$2; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "hgru_variants.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
py=${LRE_VENV:-$root/.venv}/bin/python
lre=${LRE_VENV:-$root/.venv}/bin/lre
log() { echo "$(date '+%F %T') [hgru_variants] $*" >&2; }

# run.sh names a front end's data dirs and models with its suffix (data_whisper_base,
# hgru_whisper_base); the recipe's config for the front end is used.
suffix=
[ "$front_end" = fbank ] || suffix=_${front_end//-/_}
run_opts=(--recipe "$recipe" --data-dir "$data_dir" --front-end "$front_end")
[ -n "$train_augment_opts" ] && run_opts+=(--train-augment-opts "$train_augment_opts")
feat_data=$data_dir$suffix
if [ ! -s "$feat_data/dev/feats_config.json" ]; then
  log "stages 0-1 (data and features) into $feat_data"
  ./run.sh "${run_opts[@]}" --stop-stage 1
fi

mkdir -p "$exp_dir"
dirs=()
for spec in "${all_variants[@]}"; do
  name=${spec%%:*}
  sets=${spec#*:}
  if [ -n "$variants" ] && ! printf '%s\n' $variants | grep -qx "$name"; then continue; fi
  dir=$exp_dir/$name
  overrides=${sets//,/ }
  [ -n "$epochs" ] && overrides="$overrides train.epochs=$epochs"
  model_dir=$dir/hgru$suffix
  if [ ! -s "$model_dir/final.pt" ]; then
    log "$name: training (${overrides:-recipe defaults})"
    ./run.sh "${run_opts[@]}" --exp-dir "$dir" --model hgru --stage 2 \
      --stop-stage 2 ${overrides:+--train-opts "--set $overrides"} \
      > "$dir.log" 2>&1 || { log "$name failed: see $dir.log"; continue; }
  fi
  # dev and test, and the conditions of each that the data dir has (bench/compare_models.py
  # tabulates their accuracy beside the dev and test figures)
  for s in dev test dev_noisy dev_reverb dev_tel test_noisy test_reverb test_tel test_human; do
    [ -s "$feat_data/$s/feats.scp" ] || continue
    "$lre" score --model-dir "$model_dir" --data "$feat_data/$s" --out "$model_dir/$s" \
      > "$model_dir/log/score_$s.log" 2>&1
    "$lre" evaluate --scores-dir "$model_dir/$s" --data "$feat_data/$s" \
      > "$model_dir/log/evaluate_$s.log" 2>&1
  done
  echo "$name" > "$model_dir/variant"
  echo "$overrides" >> "$model_dir/variant"
  dirs+=("$model_dir")
done
[ ${#dirs[@]} -gt 0 ] || { log "no variant finished"; exit 1; }
"$py" bench/compare_models.py ablation --out "$exp_dir/ablation.md" "${dirs[@]}"
