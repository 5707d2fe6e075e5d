#!/usr/bin/env bash
# Spoken language recognition, end to end, in Kaldi-style stages:
#
#   stage 0  prepare   corpus -> data/<set>/{wav.scp,utt2lang,utt2spk,...}
#                      (+ data/train_aug when train_augment_opts is set)
#   stage 1  features  data/<set> -> feats.scp, vad.scp, utt2num_frames
#   stage 2  train     data/train (+ data/dev) -> exp/<model>/{final.pt,best.pt,...}
#   stage 3  score     exp/<model> + data/{dev,<test sets>} -> scores.tsv, llr.tsv,
#                      attention.jsonl (calibration fitted on dev, and when data/dev_oos
#                      exists the open-set operating point on dev and dev_oos, both
#                      applied to the test sets; when data/dev_cs exists the language-turn
#                      decoder's settings on it, exp/<model>/segment.json)
#   stage 4  evaluate  scores + utt2lang -> results.json, report.md, plots of each test set
#                      (and language turns, turns.rttm, scored against a set's ref.rttm;
#                      a set of other languages, X_oos, against the in-set set X),
#                      then exp/<model>/{results.json,report.md}: the conditions table
#
# --model fusion fuses models trained before (--fusion-models "hgru tdnn", each through
# stage 3): stage 2 has nothing to train, stage 3 fits the fusion on their dev scores
# (lre fuse, instead of a calibration) and scores the test sets with all of them, stage 4
# evaluates exp/fusion and sets it side by side with each model it fuses.
#
# With no options it builds the embedded multilingual corpus (recipes/synth) and runs every
# stage. Each stage skips work whose outputs are complete; --force redoes it.
#
# Test sets: test_sets (the recipe's conf.sh, or --test-sets "test test_noisy") lists the
# test conditions; a listed set without a data dir is skipped; dev_sets (--dev-sets) the dev
# conditions scored beside dev. Training augmentation:
# train_augment_opts (conf.sh or --train-augment-opts), options of lre augment, e.g.
# "--speed 0.9,1.1 --noise white,babble --reverb"; when set, stage 0 writes
# data/<train>_aug (originals kept unless --no-original) and stages 1-2 train on it.
set -euo pipefail

# ---- options: --name value or --name=value sets the variable name (dashes as underscores);
# ---- only the variables defined here are options (tools/parse_options.sh) ----
recipe=synth          # recipes/<recipe>/: prepare.sh and conf.sh
corpus=               # where the corpus lies (real corpora; not used by synth)
stage=0
stop_stage=4
nj=2                  # parallel jobs: data generation, features, scoring and evaluating test sets
cmd=                  # prefix for each job, e.g. "srun -n1 -c1" (empty: run locally)
data_dir=data
exp_dir=exp
model=hgru            # hgru | bigru | tdnn | ecapa | fusion
fusion_models="hgru tdnn"  # with --model fusion: the model dirs under exp/ it fuses, the
                      # first one's attention kept (a name's part after its first "_" is
                      # its front end's data dir suffix: hgru_whisper_base reads
                      # data_whisper_base)
front_end=fbank       # fbank | whisper-base (Whisper base encoder states; set-up installs it)
config=               # training config (default: recipes/<recipe>/conf/<model>.yaml if it
                      # exists, else the built-in defaults of the model)
ngpu=0                # >1: DistributedDataParallel via torchrun, one process per GPU
nproc=                # training processes per node (empty: ngpu if > 0; on a machine
                      # without GPU, the recipe's cpu_train_nproc, else 1)
num_nodes=1
node_rank=0
master_addr=127.0.0.1
master_port=29500
seed=0
force=false           # a boolean: --force, --force true|false
prepare_opts=         # extra options for recipes/<recipe>/prepare.sh
feat_opts=            # extra options for features/make_feats.sh
train_opts=           # extra options for lre train, e.g. "--set epochs=5"
unknown_threshold=    # answer "unknown" below this posterior in stage 4 (instead of the
                      # open-set operating point of stage 3)
test_sets=            # test conditions, e.g. "test test_noisy" (empty: the recipe's
                      # test_sets, else its test_set)
dev_sets=             # dev conditions, e.g. "dev_noisy" (empty: the recipe's; "none": none)
train_augment_opts=   # options of lre augment for the training set (empty: the recipe's,
                      # else no augmentation)

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
  cat <<EOF

Usage: $0 [options]       (--name value or --name=value)
  --recipe NAME        recipe under recipes/ (default: $recipe)
  --corpus DIR         corpus location for real-corpus recipes
  --stage N            first stage to run (default: $stage)
  --stop-stage N       last stage to run (default: $stop_stage)
  --nj N               parallel jobs (default: $nj)
  --cmd CMD            job prefix, e.g. "srun -n1" (default: local)
  --data-dir DIR       data directories root (default: $data_dir)
  --exp-dir DIR        experiments root (default: $exp_dir)
  --model NAME         hgru | bigru | tdnn | ecapa | fusion (default: $model)
  --fusion-models "A B"  with --model fusion: the trained models it fuses (default:
                       "$fusion_models"), each scored by its own stage 3 first
  --front-end NAME     fbank | whisper-base (default: $front_end); another front end works
                       on copies of the data dirs, DATA-DIR_<front end>/<set>, and trains
                       exp/<model>_<front end> with recipes/<recipe>/conf/<model>_<front
                       end>.yaml when it exists
  --config FILE        training config YAML (default: recipes/<recipe>/conf/<model>.yaml,
                       else the model's built-in defaults)
  --ngpu N             GPUs per node for training (default: $ngpu; >1 uses torchrun + DDP)
  --nproc N            training processes per node (default: --ngpu if > 0; without a
                       GPU the recipe's choice, e.g. 2 CPU processes for synth); >1 uses
                       torchrun + DDP (gloo on CPU), the batch size being per process
  --num-nodes N        nodes for training (default: $num_nodes), with --node-rank,
                       --master-addr, --master-port
  --seed N             seed for every stage (default: $seed)
  --force [true|false] redo stages whose outputs exist
  --prepare-opts STR   extra options for the recipe's prepare.sh
  --feat-opts STR      extra options for features/make_feats.sh
  --train-opts STR     extra options for lre train
  --unknown-threshold P  stage 4 answers "unknown" below this top posterior (instead of
                       the model's open-set operating point, exp/<model>/openset.json)
  --test-sets "A B"    test sets to score and evaluate (default: the recipe's test_sets,
                       else "test"); missing ones are skipped
  --dev-sets "A B"     dev conditions scored and evaluated with dev, above the test sets
                       (default: the recipe's dev_sets, else none; "none": none)
  --train-augment-opts STR  lre augment options: train on data/<train>_aug (default:
                       the recipe's train_augment_opts, else none; "none": no augmentation)
  -h, --help           this help
EOF
}

# shellcheck source=tools/parse_options.sh
. "$(dirname "${BASH_SOURCE[0]}")/tools/parse_options.sh"
[ $# -eq 0 ] || { echo "$0: unexpected argument $1 (see --help)" >&2; exit 2; }

root=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$root"
[ -d "recipes/$recipe" ] || { echo "$0: no recipe recipes/$recipe" >&2; exit 2; }
for v in stage stop_stage nj ngpu num_nodes seed ${nproc:+nproc}; do
  [[ ${!v} =~ ^[0-9]+$ ]] || { echo "$0: --${v//_/-} must be a number, got '${!v}'" >&2; exit 2; }
done

# Recipe settings: which sets, which feature configs. recipes/<recipe>/conf.sh sets only
# those of its corpus that differ (and cpu_train_nproc, see --nproc).
# test_sets, dev_sets and train_augment_opts are options too: given on the command line,
# they win.
test_sets_option=$test_sets
dev_sets_option=$dev_sets
train_augment_opts_option=$train_augment_opts
train_set=train
dev_set=dev
test_set=test
dev_oos_set=dev_oos   # other languages than the corpus's: the open-set operating point
dev_cs_set=dev_cs     # code-switched dev recordings (with ref.rttm): the turn decoder's settings
dev_sets=             # dev conditions (e.g. dev_noisy): scored and evaluated like the test
                      # sets, and shown with dev above them in the conditions table
feat_conf=features/fbank.conf
vad_conf=features/vad.conf
cmvn_conf=features/cmvn.conf
# The front end: its feature configs, and the suffix of its data dirs and models.
fe_suffix=
case $front_end in
  fbank) ;;
  whisper-base)
    feat_conf=features/whisper_base.conf
    cmvn_conf=features/cmvn_none.conf  # the utterance mean of encoder states is informative
    fe_suffix=_whisper_base ;;
  *) echo "$0: --front-end $front_end: not one of fbank, whisper-base" >&2; exit 2 ;;
esac
# shellcheck source=/dev/null
[ -f "recipes/$recipe/conf.sh" ] && . "recipes/$recipe/conf.sh"
test_sets=${test_sets_option:-${test_sets:-$test_set}}
dev_sets=${dev_sets_option:-$dev_sets}
[ "$dev_sets" = none ] && dev_sets=
train_augment_opts=${train_augment_opts_option:-$train_augment_opts}
[ "$train_augment_opts" = none ] && train_augment_opts=  # a recipe's augmentation turned off
# The training config: the one asked for, else the recipe's for this model, else none (the
# model's built-in defaults, which stage 2 says it uses).
if [ -n "$config" ]; then
  [ -f "$config" ] || { echo "$0: --config $config: no such file" >&2; exit 2; }
elif [ -f "recipes/$recipe/conf/$model$fe_suffix.yaml" ]; then
  config=recipes/$recipe/conf/$model$fe_suffix.yaml
fi
# A fusion's models: their dirs, and for each the data dirs of its front end.
fused_dirs=() fused_data=()
if [ "$model" = fusion ]; then
  [ "$front_end" = fbank ] || { echo "$0: --model fusion: give the models' front ends in" \
    "--fusion-models (e.g. \"hgru hgru_whisper_base\"), not --front-end" >&2; exit 2; }
  for m in $fusion_models; do
    fused_dirs+=("$exp_dir/$m")
    suffix=; [[ $m == *_* ]] && suffix=_${m#*_}
    fused_data+=("$data_dir$suffix")
  done
  [ ${#fused_dirs[@]} -ge 2 ] || { echo "$0: --fusion-models: give at least two models," \
    "got '$fusion_models'" >&2; exit 2; }
fi
# fused_sets SET: the set's data dir of each fused model, in order.
fused_sets() { local d; for d in "${fused_data[@]}"; do printf '%s\n' "$d/$1"; done; }

# ---- environment: venv and Debian packages, installed on first use ----
bash tools/setup.sh
export PATH="${LRE_VENV:-$root/.venv}/bin:$PATH"

model_dir=$exp_dir/$model$fe_suffix
# Features of another front end go into copies of the data dirs (like Kaldi's data/*_hires).
feat_data=$data_dir$fe_suffix
mkdir -p "$exp_dir/log"
log() { echo "$(date '+%F %T') [run.sh] $*" >&2; }
# run_logged LOGFILE CMD...: run, keep the full output in LOGFILE, show it too.
run_logged() {
  local logfile=$1; shift
  mkdir -p "$(dirname "$logfile")"
  echo "# $*" >"$logfile"
  echo "# started $(date '+%F %T')" >>"$logfile"
  if "$@" 2>&1 | tee -a "$logfile"; then
    echo "# ended $(date '+%F %T')" >>"$logfile"
  else
    local rc=${PIPESTATUS[0]}
    log "failed ($rc); see $logfile"
    exit "$rc"
  fi
}
# job_logged LOGFILE CMD...: run CMD in the background, at most $nj at a time, its output in
# LOGFILE only (lines of parallel jobs would interleave on the terminal); wait_jobs waits for
# them all and stops the run, naming the logs, when any failed.
job_logs=()
job_logged() {
  local logfile=$1; shift
  while [ "$(jobs -rp | wc -l)" -ge "$nj" ]; do sleep 0.2; done
  mkdir -p "$(dirname "$logfile")"
  { echo "# $*"; echo "# started $(date '+%F %T')"; } >"$logfile"
  # the cores shared out among the parallel jobs, not each job taking all of them
  local threads=$(( $(nproc) / nj )); [ "$threads" -ge 1 ] || threads=1
  ( export OMP_NUM_THREADS=$threads
    "$@" >>"$logfile" 2>&1 && echo "# ended $(date '+%F %T')" >>"$logfile" ) &
  job_logs+=("$logfile")
}
wait_jobs() {
  wait
  local f failed=()
  for f in ${job_logs[@]+"${job_logs[@]}"}; do
    tail -n 1 "$f" | grep -q '^# ended' || failed+=("$f")
  done
  job_logs=()
  if [ ${#failed[@]} -gt 0 ]; then
    log "failed; see ${failed[*]}"
    tail -n 1 "${failed[0]}" >&2
    exit 1
  fi
}
# builtin_model_size DATA MODEL: "N M parameters for D-dim features, L languages", the size
# of MODEL with its built-in defaults for the features of data dir DATA.
builtin_model_size() {
  python - "$@" <<'EOF'
import json
import sys
from pathlib import Path

from lre.models import build_model

data, name = Path(sys.argv[1]), sys.argv[2]
feat_dim = json.loads((data / "feats_config.json").read_text())["feat_dim"]
langs = {line.split()[1] for line in (data / "utt2lang").read_text().splitlines() if line.strip()}
size = sum(p.numel() for p in build_model(name, feat_dim, len(langs)).parameters())
print(f"{size / 1e6:.2f} M parameters for {feat_dim}-dim features, {len(langs)} languages")
EOF
}
# copy_data_dir SRC DST: the Kaldi tables of data dir SRC (audio, labels, reference RTTMs)
# without its features, for another front end's features (kept when already there).
copy_data_dir() {
  local src=$1 dst=$2 f
  mkdir -p "$dst"
  for f in "$src"/*; do
    [ -f "$f" ] || continue
    case ${f##*/} in
      feats.scp|vad.scp|utt2num_frames|feats_config.json|feats_failed) continue ;;
    esac
    cmp -s "$f" "$dst/${f##*/}" || cp "$f" "$dst/"
  done
}
# $force as an option for the python stages
force_opt=(); $force && force_opt=(--force)
# The set trained on: the augmented copy of the training set when augmentation is asked for.
train_data=$train_set
[ -n "$train_augment_opts" ] && train_data=${train_set}_aug
# present_tests, present_devs: the listed test sets and dev conditions that have a data dir
# (each missing one said once).
present_tests=() present_devs=()
tests_checked=false
# keep_present KIND ARRAY SETS...: append to ARRAY each of SETS that has a data dir and is
# neither dev nor listed already (a missing one is said once).
keep_present() {
  local kind=$1 s
  local -n kept=$2
  shift 2
  for s in "$@"; do
    if [ "$s" = "$dev_set" ] && [ "$kind" = dev ] || \
       [[ " ${present_tests[*]} ${present_devs[*]} " == *" $s "* ]]; then
      continue  # dev itself, or listed already
    elif [ -d "$data_dir/$s" ]; then
      kept+=("$s")
    else
      log "$kind set $s: no $data_dir/$s; skipped"
    fi
  done
}
check_test_sets() {
  $tests_checked && return 0
  tests_checked=true
  # shellcheck disable=SC2086
  keep_present test present_tests $test_sets
  # shellcheck disable=SC2086
  keep_present dev present_devs $dev_sets
}

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  log "stage 0: prepare data ($recipe) in $data_dir"
  done_flag=$data_dir/.prepared-$recipe
  if [ -f "$done_flag" ] && ! $force; then
    log "stage 0: $done_flag exists; skipping (use --force to redo)"
  else
    corpus_opt=(); [ -n "$corpus" ] && corpus_opt=(--corpus "$corpus")
    # shellcheck disable=SC2086
    run_logged "$exp_dir/log/prepare.log" bash "recipes/$recipe/prepare.sh" \
      --nj "$nj" --seed "$seed" "${corpus_opt[@]}" $prepare_opts "$data_dir"
    check_test_sets
    oos_dev=(); [ -d "$data_dir/$dev_oos_set" ] && oos_dev=("$dev_oos_set")
    for s in "$train_set" "$dev_set" ${oos_dev[@]+"${oos_dev[@]}"} \
             ${present_devs[@]+"${present_devs[@]}"} "${present_tests[@]}"; do
      run_logged "$exp_dir/log/validate_$s.log" lre validate "$data_dir/$s"
    done
    touch "$done_flag"
  fi
  if [ -n "$train_augment_opts" ]; then
    # The flag holds the options it was made with: other options make it again.
    aug_flag=$data_dir/.augmented-$train_data
    if [ -f "$aug_flag" ] && [ "$(cat "$aug_flag")" = "$train_augment_opts" ] && ! $force; then
      log "stage 0: $data_dir/$train_data is made with these options; skipping (use --force)"
    else
      log "stage 0: augment $data_dir/$train_set -> $data_dir/$train_data ($train_augment_opts)"
      rm -f "$aug_flag"
      $force && rm -rf "${data_dir:?}/$train_data"
      # shellcheck disable=SC2086
      run_logged "$exp_dir/log/augment_$train_set.log" lre augment \
        --in "$data_dir/$train_set" --out "$data_dir/$train_data" --nj "$nj" --seed "$seed" \
        $train_augment_opts
      run_logged "$exp_dir/log/validate_$train_data.log" lre validate "$data_dir/$train_data"
      printf '%s\n' "$train_augment_opts" >"$aug_flag"
    fi
  fi
fi
check_test_sets

oos_dev=(); [ -d "$data_dir/$dev_oos_set" ] && oos_dev=("$dev_oos_set")
cs_dev=(); [ -f "$data_dir/$dev_cs_set/ref.rttm" ] && cs_dev=("$dev_cs_set")

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  for s in "$train_data" "$dev_set" ${oos_dev[@]+"${oos_dev[@]}"} ${cs_dev[@]+"${cs_dev[@]}"} \
           ${present_devs[@]+"${present_devs[@]}"} "${present_tests[@]}"; do
    [ "$feat_data" = "$data_dir" ] || copy_data_dir "$data_dir/$s" "$feat_data/$s"
    log "stage 1: features ($front_end) for $feat_data/$s"
    # make_feats.sh itself skips utterances whose features are complete.
    # shellcheck disable=SC2086
    run_logged "$exp_dir/log/make_feats_$s$fe_suffix.log" bash features/make_feats.sh \
      --nj "$nj" --cmd "$cmd" --conf "$feat_conf" --vad-conf "$vad_conf" \
      --cmvn-conf "$cmvn_conf" "${force_opt[@]}" $feat_opts \
      "$feat_data/$s" "$exp_dir/make_feats/$s$fe_suffix"
  done
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ] && [ "$model" = fusion ]; then
  log "stage 2: a fusion has nothing to train; it fuses ${fused_dirs[*]}"
elif [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  if [ -n "$config" ]; then
    log "stage 2: train $model -> $model_dir with $config"
  else
    size=$(builtin_model_size "$feat_data/$train_data" "$model" 2>/dev/null) || size=
    log "stage 2: train $model -> $model_dir with the built-in $model defaults${size:+ ($size)}:" \
      "there is no recipes/$recipe/conf/$model.yaml ($model_dir/config.yaml will hold" \
      "every setting used, a start for that file)"
  fi
  if [ -f "$model_dir/final.pt" ] && ! $force; then
    log "stage 2: $model_dir/final.pt exists; skipping (use --force to retrain)"
  else
    train_args=(--train "$feat_data/$train_data" --dev "$feat_data/$dev_set" --exp "$model_dir"
                --model "$model" --seed "$seed")
    [ -n "$config" ] && train_args+=(--config "$config")
    # An interrupted run continues from its last checkpoint; --force starts afresh.
    if $force; then rm -rf "$model_dir/checkpoints"; else train_args+=(--resume); fi
    if [ -z "$nproc" ]; then
      if [ "$ngpu" -gt 0 ]; then
        nproc=$ngpu
      elif [ "${cpu_train_nproc:-1}" -gt 1 ] && \
           [ "$(python -c 'import torch; print(torch.cuda.device_count())')" = 0 ]; then
        cores=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)
        nproc=$(( cpu_train_nproc < cores ? cpu_train_nproc : cores ))
      else
        nproc=1
      fi
    fi
    if [ "$nproc" -gt 1 ] || [ "$num_nodes" -gt 1 ]; then
      log "stage 2: $nproc training process(es) per node, $num_nodes node(s)"
      if [ "$num_nodes" -gt 1 ]; then
        rendezvous=(--nnodes "$num_nodes" --node_rank "$node_rank"
                    --master_addr "$master_addr" --master_port "$master_port")
      else
        rendezvous=(--standalone --nnodes 1)  # a free local port: runs side by side work
      fi
      # shellcheck disable=SC2086
      run_logged "$model_dir/log/run_train.log" torchrun "${rendezvous[@]}" \
        --nproc_per_node "$nproc" -m lre.train "${train_args[@]}" $train_opts
    else
      # shellcheck disable=SC2086
      run_logged "$model_dir/log/run_train.log" lre train "${train_args[@]}" $train_opts
    fi
  fi
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  log "stage 3: score $dev_set, fit calibration, score ${present_devs[*]} ${present_tests[*]}"
  # A new calibration changes every test set's scores: they are all scored again.
  rescore=$force
  # score_data SET: the data dir(s) lre score reads for SET (a fusion: each model's own).
  score_data() { if [ "$model" = fusion ]; then fused_sets "$1"; else echo "$feat_data/$1"; fi; }
  if [ "$model" = fusion ]; then
    # The models' raw dev scores, from their own stage 3; the fusion is their calibration.
    dev_scores=()
    for d in "${fused_dirs[@]}"; do
      [ -f "$d/$dev_set/scores_raw.tsv" ] || { log "stage 3: no $d/$dev_set/scores_raw.tsv:" \
        "run stages 2-4 of --model ${d##*/} first"; exit 1; }
      dev_scores+=("$d/$dev_set/scores_raw.tsv")
    done
    if [ -f "$model_dir/fusion.json" ] && ! $force; then
      log "stage 3: $model_dir/fusion.json exists; skipping (use --force)"
    else
      # shellcheck disable=SC2046
      run_logged "$model_dir/log/fuse.log" lre fuse --model-dirs "${fused_dirs[@]}" \
        --data $(fused_sets "$dev_set") --scores "${dev_scores[@]}" --out "$model_dir" \
        --seed "$seed"
      rescore=true
    fi
  elif [ -f "$model_dir/calibration.json" ] && [ -f "$model_dir/$dev_set/attention.jsonl" ] && \
     ! $force; then
    log "stage 3: $model_dir/calibration.json exists; skipping $dev_set (use --force)"
  else
    rm -f "$model_dir/calibration.json"
    run_logged "$model_dir/log/score_$dev_set.log" lre score --model-dir "$model_dir" \
      --data "$feat_data/$dev_set" --out "$model_dir/$dev_set"
    # --method auto: none, temperature or affine, whichever cross-validation on dev says
    # lowers held-out Cllr (none unless one does); a dev set lacking languages gets one
    # that can be fitted, with a warning.
    run_logged "$model_dir/log/calibrate.log" lre calibrate \
      --scores "$model_dir/$dev_set/scores_raw.tsv" --data "$feat_data/$dev_set" \
      --out "$model_dir/calibration.json" --seed "$seed"
    rescore=true
  fi
  # When to answer "unknown": an open-set score and its threshold, chosen on dev and dev_oos
  # with the calibration (lre openset fit); a new one changes the test sets' answers.
  if [ ${#oos_dev[@]} -eq 0 ]; then
    log "stage 3: no $data_dir/$dev_oos_set: no open-set operating point (every answer is" \
      "one of the model's languages)"
  elif [ -f "$model_dir/openset.json" ] && ! $rescore; then
    log "stage 3: $model_dir/openset.json exists; skipping (use --force)"
  else
    # shellcheck disable=SC2046
    run_logged "$model_dir/log/openset_fit.log" lre openset fit --model-dir "$model_dir" \
      --dev $(score_data "$dev_set") --dev-oos $(score_data "$dev_oos_set") --seed "$seed"
    rescore=true
  fi
  # The language-turn decoder's settings: the lowest identification error rate of a grid
  # on code-switched dev recordings (lre segment --sweep), kept with the model.
  if [ ${#cs_dev[@]} -eq 0 ]; then
    log "stage 3: no $data_dir/$dev_cs_set/ref.rttm: language turns use the decoder's" \
      "built-in settings"
  elif [ -f "$model_dir/segment.json" ] && ! $rescore; then
    log "stage 3: $model_dir/segment.json exists; skipping (use --force)"
  else
    # shellcheck disable=SC2046
    run_logged "$model_dir/log/score_$dev_cs_set.log" lre score --model-dir "$model_dir" \
      --data $(score_data "$dev_cs_set") --out "$model_dir/$dev_cs_set"
    run_logged "$model_dir/log/segment_sweep.log" lre segment \
      --scores-dir "$model_dir/$dev_cs_set" --data "$feat_data/$dev_cs_set" --sweep \
      --nj "$nj" --save "$model_dir/segment.json"
  fi
  scored=(${present_devs[@]+"${present_devs[@]}"} "${present_tests[@]}")
  # A fusion's dev scores are its models'; its own dev goes in the conditions table.
  [ "$model" = fusion ] && [ ${#present_devs[@]} -gt 0 ] && scored=("$dev_set" "${scored[@]}")
  for s in "${scored[@]}"; do
    if [ -f "$model_dir/$s/attention.jsonl" ] && ! $rescore; then
      log "stage 3: $model_dir/$s/attention.jsonl exists; skipping (use --force)"
      continue
    fi
    log "stage 3: score $feat_data/$s -> $model_dir/$s (log: $model_dir/log/score_$s.log)"
    # shellcheck disable=SC2046
    job_logged "$model_dir/log/score_$s.log" lre score --model-dir "$model_dir" \
      --data $(score_data "$s") --out "$model_dir/$s"
  done
  wait_jobs
fi

# evaluate_set FLAG ARGS...: lre evaluate ARGS, then the flag holding ARGS.
evaluate_set() {
  local flag=$1; shift
  lre evaluate "$@" && printf '%s\n' "$*" >"$flag"
}
if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  evaluated=()
  # With dev conditions, dev and they head the table (dev's figures are those of the set
  # that chose the checkpoint and fitted the calibration).
  eval_sets=("${present_tests[@]}")
  [ ${#present_devs[@]} -gt 0 ] && eval_sets=("$dev_set" "${present_devs[@]}" "${eval_sets[@]}")
  for s in "${eval_sets[@]}"; do
    eval_args=(--scores-dir "$model_dir/$s" --data "$feat_data/$s")
    [ -n "$unknown_threshold" ] && eval_args+=(--unknown-threshold "$unknown_threshold")
    [ -f "$model_dir/segment.json" ] && eval_args+=(--decoder "$model_dir/segment.json")
    # A set of other languages, X_oos, is told from the in-set set X of the same kind
    # (test_oos from test, test_human_oos from test_human).
    paired=$model_dir/$s
    if [[ $s == *_oos ]]; then
      if [ -f "$model_dir/${s%_oos}/scores.tsv" ]; then
        paired=$model_dir/${s%_oos}
        eval_args+=(--inset "$paired" "$feat_data/${s%_oos}")
      else
        log "stage 4: $s: no scores of ${s%_oos} (add it to the test sets) to tell it from"
      fi
    fi
    # The flag holds the arguments of the evaluation; new scores or arguments redo it.
    eval_flag=$model_dir/$s/.evaluated
    if [ -f "$eval_flag" ] && [ -f "$model_dir/$s/results.json" ] && \
       [ -f "$model_dir/$s/scores.tsv" ] && \
       [ "$eval_flag" -nt "$model_dir/$s/scores.tsv" ] && \
       [ "$eval_flag" -nt "$paired/scores.tsv" ] && \
       { [ ! -f "$model_dir/segment.json" ] || [ "$eval_flag" -nt "$model_dir/segment.json" ]; } && \
       [ "$(cat "$eval_flag")" = "${eval_args[*]}" ] && ! $force; then
      log "stage 4: $model_dir/$s/results.json is up to date; skipping (use --force)"
    else
      log "stage 4: evaluate $model_dir/$s (log: $model_dir/log/evaluate_$s.log)"
      rm -f "$eval_flag"
      job_logged "$model_dir/log/evaluate_$s.log" evaluate_set "$eval_flag" "${eval_args[@]}"
    fi
    evaluated+=("$model_dir/$s")
  done
  wait_jobs
  if [ ${#evaluated[@]} -gt 0 ]; then
    log "stage 4: conditions table of ${eval_sets[*]} -> $model_dir/report.md"
    # A fusion is set side by side with each model it fuses (those evaluated by stage 4).
    compare=()
    for d in ${fused_dirs[@]+"${fused_dirs[@]}"}; do
      if [ -f "$d/results.json" ]; then compare+=("$d")
      else log "stage 4: no $d/results.json (its stage 4): not in the comparison"; fi
    done
    [ ${#compare[@]} -gt 0 ] && compare=(--compare "${compare[@]}")
    run_logged "$model_dir/log/evaluate_conditions.log" lre evaluate \
      --conditions "${evaluated[@]}" --out "$model_dir" ${compare[@]+"${compare[@]}"}
  else
    log "stage 4: none of the test sets ($test_sets) has a data dir; nothing to evaluate"
  fi
fi
