#!/usr/bin/env bash
# Build the embedded multilingual corpus with espeak-ng: DATA_ROOT/{train,dev,test} (Kaldi
# data dirs) and the WAVs under DATA_ROOT/wavs/, then the test conditions made from the
# test set (with `lre augment`, into DATA_ROOT/<set>/wav/) and from real human speech:
#   test_noisy      babble (of test utterances), pink or white noise at 0-15 dB SNR
#   test_reverb     generated room impulse responses, RT60 0.3-0.9 s
#   test_tel        telephone: 8 kHz, 300-3400 Hz, mu-law, GSM 06.10 or Opus per utterance
#   test_human      KTuberling's recorded words (ktuberling-data) of the corpus's languages,
#   test_human_oos  ... and of every other language (skipped without the package)
# The conditions draw from seed + 1000, so no draw repeats one of a training augmentation.
# Utterances already generated are kept, so an interrupted run continues where it stopped.
#
# Usage: recipes/synth/prepare.sh [options] <data-root>
#   --nj N               parallel espeak-ng / augmentation processes (default 2)
#   --seed N             corpus seed: same seed, same text, speakers and audio (default 0)
#   --langs en,de,...    languages (default: en de fr es it pt nl da ru uk pl cs fi hu)
#   --train-per-lang N   utterances per language in train (default 160)
#   --dev-per-lang N     ... in dev (default 30)
#   --test-per-lang N    ... in test (default 30)
#   --utts-per-spk N     utterances per synthetic speaker (default 3)
#   --min-dur S, --max-dur S   utterance length range in seconds (default 2, 12)
#   --train-voice-mix N  N generated voice variants for train only (default 0: none)
#   --no-progress        no progress bar
#   --ktuberling DIR     KTuberling's sounds (default /usr/share/ktuberling/sounds)
#   --no-conditions      build train, dev and test only
# Each option also as --name=value; all but the last two are those of `lre prepare synth`
# (see its -h).
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
train_voice_mix=
no_progress=false
ktuberling=/usr/share/ktuberling/sounds
no_conditions=false
corpus=    # refused: the corpus is generated here
# shellcheck source=tools/parse_options.sh
. "$(dirname "${BASH_SOURCE[0]}")/../../tools/parse_options.sh"
# shellcheck source=recipes/prepare_lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../prepare_lib.sh"
prepare_data_root generated "$@"
prepare_forward nj seed langs train_per_lang dev_per_lang test_per_lang utts_per_spk \
  min_dur max_dur train_voice_mix --flags no_progress
find_lre
command -v espeak-ng >/dev/null || {
  echo "$0: espeak-ng is not installed; run tools/setup.sh (or: sudo apt-get install espeak-ng)" >&2
  exit 1
}
"$lre" prepare synth --out "$data_root" ${args[@]+"${args[@]}"}
$no_conditions && exit 0

test_dir=$data_root/test
if [ ! -f "$test_dir/utt2lang" ]; then
  echo "$0: no test set in $data_root: no test conditions built" >&2
  exit 0
fi
cond_seed=$(( ${seed:-0} + 1000 ))
# Worker processes take seconds each to start: a small test set is faster in one.
augment_nj=${nj:-2}
[ "$(wc -l <"$test_dir/utt2lang")" -ge 100 ] || augment_nj=1
augment() {  # augment SET OPTIONS...: a copy of every test utterance into DATA_ROOT/SET
  local set=$1; shift
  "$lre" augment --in "$test_dir" --out "$data_root/$set" --no-original \
    --seed "$cond_seed" --nj "$augment_nj" "$@"
}
augment test_noisy --noise white,pink,babble --snr 0:15
augment test_reverb --reverb --rt60 0.3:0.9
augment test_tel --telephone --tel-codecs mulaw,gsm,opus

if [ -d "$ktuberling" ]; then
  # The languages of the corpus are the ones a model trained on it knows.
  known=$(cut -d' ' -f2 "$test_dir/utt2lang" | LC_ALL=C sort -u | paste -sd, -)
  "$lre" prepare ktuberling --out "$data_root" --root "$ktuberling" --langs "$known" \
    --seed "$cond_seed" --nj "${nj:-2}"
else
  echo "$0: $ktuberling not found (Debian package ktuberling-data, see tools/setup.sh): test_human and test_human_oos skipped" >&2
fi
