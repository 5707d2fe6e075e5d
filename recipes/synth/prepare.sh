#!/usr/bin/env bash
# Build the embedded multilingual corpus with espeak-ng: DATA_ROOT/{train,dev,test} (Kaldi
# data dirs) and the WAVs under DATA_ROOT/wavs/. Utterances already generated are kept, so
# an interrupted run continues where it stopped.
#
# Usage: recipes/synth/prepare.sh [options] <data-root>
#   --nj N               parallel espeak-ng processes (default 2)
#   --seed N             corpus seed: same seed, same text, speakers and audio (default 0)
#   --langs en,de,...    languages (default: en de fr es it pt nl da ru uk pl cs fi hu)
#   --train-per-lang N   utterances per language in train (default 160)
#   --dev-per-lang N     ... in dev (default 12)
#   --test-per-lang N    ... in test (default 12)
#   --utts-per-spk N     utterances per synthetic speaker (default 3)
#   --min-dur S, --max-dur S   utterance length range in seconds (default 2, 12)
#   --no-progress        no progress bar
# Any other option is passed to `lre prepare synth` (see `lre prepare synth -h`).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; }

data_root=
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --corpus)
      echo "$0: the synthetic corpus is generated here; it takes no --corpus" >&2; exit 2 ;;
    --no-progress) args+=("$1"); shift ;;
    --*=*) args+=("$1"); shift ;;
    --*)
      [ $# -ge 2 ] || { echo "$0: option $1 needs a value" >&2; exit 2; }
      args+=("$1" "$2"); shift 2 ;;
    *)
      [ -z "$data_root" ] || { echo "$0: more than one data root: $data_root $1" >&2; exit 2; }
      data_root=$1; shift ;;
  esac
done
[ -n "$data_root" ] || { usage >&2; exit 2; }

lre=lre
[ -x "${LRE_VENV:-$root/.venv}/bin/lre" ] && lre=${LRE_VENV:-$root/.venv}/bin/lre
command -v "$lre" >/dev/null || { echo "$0: lre is not installed; run tools/setup.sh" >&2; exit 1; }
command -v espeak-ng >/dev/null || {
  echo "$0: espeak-ng is not installed; run tools/setup.sh (or: sudo apt-get install espeak-ng)" >&2
  exit 1
}
exec "$lre" prepare synth --out "$data_root" ${args[@]+"${args[@]}"}
