#!/usr/bin/env bash
# Feature stage for one data dir, Kaldi style (like steps/make_fbank.sh + compute_vad_decision.sh):
# log-mel fbank / MFCC / MFCC+SDC, energy VAD, utt2num_frames, stored as Kaldi ark/scp.
#
# Usage: features/make_feats.sh [options] <data-dir> [<exp-dir> [<feat-dir>]]
#  e.g.: features/make_feats.sh --nj 8 --cmd "srun -n1 -c1" data/train
#        features/make_feats.sh --conf features/mfcc.conf --sdc-conf features/sdc.conf \
#            data/train exp/make_feats/train mfcc
#
#   <exp-dir>   job logs go to <exp-dir>/log/make_feats.<i>.log  (default exp/make_feats/<set>)
#   <feat-dir>  ark/scp files of the jobs                          (default <data-dir>/data)
# Options:
#   --nj N               parallel jobs, one per part of <data-dir>/split<N> (default 4)
#   --cmd CMD            job runner: "" runs locally (default); a prefix such as "srun -n1 -c1"
#                        or "sbatch --wait"; or a Kaldi script (queue.pl, slurm.pl) called as
#                        CMD LOG COMMAND
#   --conf FILE          feature config (default features/fbank.conf); also --feat-conf,
#                        which wins when both are given
#   --vad-conf FILE      energy VAD config (default features/vad.conf)
#   --cmvn-conf FILE     CMVN applied when features are read (default features/cmvn.conf)
#   --sdc-conf FILE      add shifted delta cepstra (with an MFCC --conf)
#   --storage S          encoder states: float32 | compressed | none (default: the conf's);
#                        none stores the VAD only, and every reader (training crops, scoring)
#                        encodes the audio of wav.scp when it reads an utterance
#   --max-fail-share X   fail when more than this share of utterances is skipped (default 0.1)
#   --force [true|false] recompute every job (default: only jobs that did not finish)
#   Each option also as --name=value.
#
# Writes into <data-dir>: feats.scp (not with --storage none), vad.scp, utt2num_frames,
# feats_config.json and, when some utterances could not be used, feats_failed (utterance +
# reason). Re-running after a failure or a kill redoes only the unfinished jobs. Exit status 0 unless a job failed or more than
# --max-fail-share of the utterances were skipped.
set -euo pipefail

# Options (tools/parse_options.sh); empty config paths mean the files beside this script.
nj=4
cmd=
conf=
feat_conf=
vad_conf=
cmvn_conf=
sdc_conf=
storage=
max_fail_share=0.1
force=false
# shellcheck source=tools/parse_options.sh
. "$(dirname "${BASH_SOURCE[0]}")/../tools/parse_options.sh"
if [ $# -lt 1 ] || [ $# -gt 3 ]; then
  parse_options_usage >&2
  exit 1
fi

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
conf=${feat_conf:-${conf:-$here/fbank.conf}}
vad_conf=${vad_conf:-$here/vad.conf}
cmvn_conf=${cmvn_conf:-$here/cmvn.conf}
force_opt=(); $force && force_opt=(--force)

data=$1
set_name=$(basename "$data")
exp=${2:-exp/make_feats/$set_name}
feat_dir=${3:-$data/data}

for f in "$data/wav.scp" "$conf" "$vad_conf" "$cmvn_conf" ${sdc_conf:+"$sdc_conf"}; do
  [ -f "$f" ] || { echo "$0: no such file $f" >&2; exit 1; }
done

# The lre console script, else the package from this checkout's venv or the current python.
if command -v lre >/dev/null 2>&1; then
  lre=(lre)
elif [ -x "$here/../.venv/bin/python" ]; then
  lre=("$here/../.venv/bin/python" -m lre.cli)
else
  lre=(python3 -m lre.cli)
fi

echo "$0: computing features for $data ($nj jobs, logs in $exp/log)" >&2
"${lre[@]}" features "$data" "$exp" "$feat_dir" \
  --feat-conf "$conf" --vad-conf "$vad_conf" --cmvn-conf "$cmvn_conf" \
  ${sdc_conf:+--sdc-conf "$sdc_conf"} ${storage:+--storage "$storage"} \
  --nj "$nj" --cmd "$cmd" --max-fail-share "$max_fail_share" "${force_opt[@]}"
echo "$0: done: $data/feats_config.json" >&2
