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

# shellcheck source=recipes/prepare_lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../prepare_lib.sh"
parse_prepare_args --flags "--no-progress" --no-corpus -- "$@"
find_lre
command -v espeak-ng >/dev/null || {
  echo "$0: espeak-ng is not installed; run tools/setup.sh (or: sudo apt-get install espeak-ng)" >&2
  exit 1
}
exec "$lre" prepare synth --out "$data_root" ${args[@]+"${args[@]}"}
