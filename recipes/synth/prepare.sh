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
# Each option also as --name=value; they are those of `lre prepare synth` (see its -h).
set -euo pipefail

# Options; empty: the default of `lre prepare synth`.
nj=
seed=
langs=
train_per_lang=
dev_per_lang=
test_per_lang=
utts_per_spk=
min_dur=
max_dur=
no_progress=false
corpus=    # refused: the corpus is generated here
# shellcheck source=tools/parse_options.sh
. "$(dirname "${BASH_SOURCE[0]}")/../../tools/parse_options.sh"
# shellcheck source=recipes/prepare_lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../prepare_lib.sh"
prepare_data_root generated "$@"
prepare_forward nj seed langs train_per_lang dev_per_lang test_per_lang utts_per_spk \
  min_dur max_dur --flags no_progress
find_lre
command -v espeak-ng >/dev/null || {
  echo "$0: espeak-ng is not installed; run tools/setup.sh (or: sudo apt-get install espeak-ng)" >&2
  exit 1
}
exec "$lre" prepare synth --out "$data_root" ${args[@]+"${args[@]}"}
