#!/usr/bin/env bash
# Train the HGRU and its peers (flat BiGRU, x-vector TDNN, ECAPA-TDNN) by the same recipe on the
# same data, features, crops, augmentation, seed and epochs budget, then write one comparison
# table (bench/compare_models.py): accuracy, EER, min-Cavg and Cllr on every test condition,
# parameters, training time and identify real-time factor.
#
#   bench/compare_models.sh                      # matched parameters: recipes/synth/conf/*.yaml
#   bench/compare_models.sh --setting time       # matched training time: epochs scaled so each
#                                                # model trains as long as the HGRU did
#   bench/compare_models.sh --models "hgru tdnn" --exp-dir exp_compare --stage 3
#
# Stages 0-1 (data and features) are those of ./run.sh and are made when missing; each model's
# stages 2-4 go to <exp-dir>/<setting>/<model>, so re-running a finished model only re-scores.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

models="hgru bigru tdnn ecapa"
recipe=synth
data_dir=data
exp_dir=exp_compare
setting=params          # params | time
stage=2                 # first run.sh stage per model (3: re-score only)
epochs=                 # empty: each config's own
out=

usage() {
  sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
  echo "options: --models LIST --recipe NAME --data-dir DIR --exp-dir DIR --setting params|time"
  echo "         --stage N --epochs N --out FILE (default: <exp-dir>/<setting>/comparison.md)"
}
while [ $# -gt 0 ]; do
  case "$1" in
    --models) models=$2; shift 2 ;;
    --recipe) recipe=$2; shift 2 ;;
    --data-dir) data_dir=$2; shift 2 ;;
    --exp-dir) exp_dir=$2; shift 2 ;;
    --setting) setting=$2; shift 2 ;;
    --stage) stage=$2; shift 2 ;;
    --epochs) epochs=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "compare_models.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done
case "$setting" in params|time) ;; *)
  echo "compare_models.sh: --setting must be params or time, got '$setting'" >&2; exit 2 ;;
esac
py=${LRE_VENV:-$root/.venv}/bin/python
base=$exp_dir/$setting
out=${out:-$base/comparison.md}
mkdir -p "$base"

log() { echo "$(date '+%F %T') [compare_models] $*" >&2; }

if [ ! -s "$data_dir/dev/feats.scp" ]; then
  log "stages 0-1 (data and features) into $data_dir"
  ./run.sh --recipe "$recipe" --data-dir "$data_dir" --stop-stage 1
fi

# In the matched-time setting every model gets the epochs that fill the HGRU's training time,
# from the seconds per epoch of its own first epochs (a short probe run).
epochs_for() {
  local m=$1
  if [ -n "$epochs" ]; then echo "$epochs"; return; fi
  if [ "$setting" = params ] || [ "$m" = hgru ]; then return; fi
  "$py" bench/compare_models.py epochs --reference "$base/hgru" --probe "$base/probe_$m"
}

if [ "$setting" = time ] && [ -z "$epochs" ]; then
  models_ordered="hgru $(echo "$models" | tr ' ' '\n' | grep -vx hgru | tr '\n' ' ')"
else
  models_ordered=$models
fi
for m in $models_ordered; do
  n=
  if [ "$setting" = time ] && [ "$m" != hgru ] && [ -z "$epochs" ] && [ "$stage" -le 2 ]; then
    log "$m: probe of 2 epochs for its seconds per epoch"
    ./run.sh --recipe "$recipe" --data-dir "$data_dir" --exp-dir "$base/probe" --model "$m" \
      --stage 2 --stop-stage 2 --train-opts "--set train.epochs=2" > "$base/probe_$m.log" 2>&1
    rm -rf "$base/probe_$m" && mv "$base/probe/$m" "$base/probe_$m"
    n=$(epochs_for "$m")
  elif [ -n "$epochs" ]; then
    n=$epochs
  fi
  opts=()
  [ -n "$n" ] && opts=(--train-opts "--set train.epochs=$n")
  log "$m: stages $stage-4 into $base/$m ${n:+($n epochs)}"
  ./run.sh --recipe "$recipe" --data-dir "$data_dir" --exp-dir "$base" --model "$m" \
    --stage "$stage" --stop-stage 4 "${opts[@]}" > "$base/$m.log" 2>&1 \
    || { log "$m failed: see $base/$m.log"; continue; }
done

dirs=()
for m in $models; do [ -s "$base/$m/results.json" ] && dirs+=("$base/$m"); done
[ ${#dirs[@]} -gt 0 ] || { log "no model finished"; exit 1; }
"$py" bench/compare_models.py table --data-dir "$data_dir" --out "$out" "${dirs[@]}"
log "table: $out"
