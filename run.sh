#!/usr/bin/env bash
# Spoken language recognition, end to end, in Kaldi-style stages:
#
#   stage 0  prepare   corpus -> data/<set>/{wav.scp,utt2lang,utt2spk,...}
#   stage 1  features  data/<set> -> feats.scp, vad.scp, utt2num_frames
#   stage 2  train     data/train (+ data/dev) -> exp/<model>/{final.pt,best.pt,...}
#   stage 3  score     exp/<model> + data/{dev,test} -> scores.tsv, llr.tsv, attention.jsonl
#                      (calibration fitted on dev, applied to test)
#   stage 4  evaluate  scores + utt2lang -> results.json, report.md, plots
#
# With no options it builds the embedded multilingual corpus (recipes/synth) and runs every
# stage. Each stage skips work whose outputs are complete; --force redoes it.
set -euo pipefail

# ---- options: --name value or --name=value sets the variable name (dashes as underscores);
# ---- only the variables defined here are options (tools/parse_options.sh) ----
recipe=synth          # recipes/<recipe>/: prepare.sh and conf.sh
corpus=               # where the corpus lies (real corpora; not used by synth)
stage=0
stop_stage=4
nj=2                  # parallel jobs for data generation and features
cmd=                  # prefix for each job, e.g. "srun -n1 -c1" (empty: run locally)
data_dir=data
exp_dir=exp
model=hgru            # hgru | bigru | tdnn | ecapa
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
unknown_threshold=    # answer "unknown" below this posterior in stage 4

usage() {
  sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
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
  --model NAME         hgru | bigru | tdnn | ecapa (default: $model)
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
  --unknown-threshold P  open-set decision threshold for stage 4
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
train_set=train
dev_set=dev
test_set=test
feat_conf=features/fbank.conf
vad_conf=features/vad.conf
cmvn_conf=features/cmvn.conf
# shellcheck source=/dev/null
[ -f "recipes/$recipe/conf.sh" ] && . "recipes/$recipe/conf.sh"
# The training config: the one asked for, else the recipe's for this model, else none (the
# model's built-in defaults, which stage 2 says it uses).
if [ -n "$config" ]; then
  [ -f "$config" ] || { echo "$0: --config $config: no such file" >&2; exit 2; }
elif [ -f "recipes/$recipe/conf/$model.yaml" ]; then
  config=recipes/$recipe/conf/$model.yaml
fi

# ---- environment: venv and Debian packages, installed on first use ----
bash tools/setup.sh
export PATH="${LRE_VENV:-$root/.venv}/bin:$PATH"

model_dir=$exp_dir/$model
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
# $force as an option for the python stages
force_opt=(); $force && force_opt=(--force)
sets="$train_set $dev_set $test_set"

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
    for s in $sets; do
      run_logged "$exp_dir/log/validate_$s.log" lre validate "$data_dir/$s"
    done
    touch "$done_flag"
  fi
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  for s in $sets; do
    log "stage 1: features for $data_dir/$s"
    # make_feats.sh itself skips utterances whose features are complete.
    # shellcheck disable=SC2086
    run_logged "$exp_dir/log/make_feats_$s.log" bash features/make_feats.sh \
      --nj "$nj" --cmd "$cmd" --conf "$feat_conf" --vad-conf "$vad_conf" \
      --cmvn-conf "$cmvn_conf" "${force_opt[@]}" $feat_opts \
      "$data_dir/$s" "$exp_dir/make_feats/$s"
  done
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  if [ -n "$config" ]; then
    log "stage 2: train $model -> $model_dir with $config"
  else
    size=$(builtin_model_size "$data_dir/$train_set" "$model" 2>/dev/null) || size=
    log "stage 2: train $model -> $model_dir with the built-in $model defaults${size:+ ($size)}:" \
      "there is no recipes/$recipe/conf/$model.yaml ($model_dir/config.yaml will hold" \
      "every setting used, a start for that file)"
  fi
  if [ -f "$model_dir/final.pt" ] && ! $force; then
    log "stage 2: $model_dir/final.pt exists; skipping (use --force to retrain)"
  else
    train_args=(--train "$data_dir/$train_set" --dev "$data_dir/$dev_set" --exp "$model_dir"
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
  log "stage 3: score $dev_set, fit calibration, score $test_set"
  if [ -f "$model_dir/$test_set/attention.jsonl" ] && ! $force; then
    log "stage 3: $model_dir/$test_set/attention.jsonl exists; skipping (use --force)"
  else
    rm -f "$model_dir/calibration.json"
    run_logged "$model_dir/log/score_$dev_set.log" lre score --model-dir "$model_dir" \
      --data "$data_dir/$dev_set" --out "$model_dir/$dev_set"
    run_logged "$model_dir/log/calibrate.log" lre calibrate \
      --scores "$model_dir/$dev_set/scores_raw.tsv" --data "$data_dir/$dev_set" \
      --out "$model_dir/calibration.json"
    run_logged "$model_dir/log/score_$test_set.log" lre score --model-dir "$model_dir" \
      --data "$data_dir/$test_set" --out "$model_dir/$test_set"
  fi
fi

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  log "stage 4: evaluate $model_dir/$test_set"
  eval_args=(--scores-dir "$model_dir/$test_set" --data "$data_dir/$test_set")
  [ -n "$unknown_threshold" ] && eval_args+=(--unknown-threshold "$unknown_threshold")
  run_logged "$model_dir/log/evaluate_$test_set.log" lre evaluate "${eval_args[@]}"
  log "report: $model_dir/$test_set/report.md"
fi
