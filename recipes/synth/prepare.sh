#!/usr/bin/env bash
# Build the embedded multilingual corpus with espeak-ng: DATA_ROOT/{train,dev,test} (Kaldi
# data dirs) and the WAVs under DATA_ROOT/wavs/, then the test conditions made from the
# test set (with `lre augment`, into DATA_ROOT/<set>/wav/) and from real human speech:
#   test_noisy      babble (of test utterances), pink or white noise at 0-15 dB SNR
#   test_reverb     generated room impulse responses, RT60 0.3-0.9 s
#   test_tel        telephone: 8 kHz, 300-3400 Hz, mu-law, GSM 06.10 or Opus per utterance
#   test_human      KTuberling's recorded words (ktuberling-data) of the corpus's languages,
#   test_human_oos  ... and of every other language (skipped without the package)
#   test_cs         code-switched recordings: 2-4 test utterances of different languages
#                   (a quarter in one language), with the reference turns in ref.rttm;
#                   dev_cs the same from dev, to choose the language-turn decoder's settings
#   dev_oos         espeak-ng languages the corpus lacks (--oos-dev-langs), spoken by dev's
#                   voices: to choose when to answer "unknown" (lre openset fit)
#   test_oos        other such languages (--oos-test-langs) by test's voices: to measure it
# and, in train, utterances of a third group of such languages (--other-langs) by train's
# voices, labelled "other": the training of a model's rejection class (lre.languages.OTHER).
# The conditions draw from seed + 1000 (the code-switched sets from seed + 2000), so no draw
# repeats one of a training augmentation. The out-of-set sets draw from the corpus's own seed:
# that gives them dev's and test's voices, and their languages are the corpus's none, so no
# draw of theirs repeats one of the corpus.
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
#   --train-voices N     N speakers per language in train (default 0: --utts-per-spk rules);
#                        with --train-per-lang 44, about 5 minutes of 2 voices per language
#   --no-progress        no progress bar
#   --ktuberling DIR     KTuberling's sounds (default /usr/share/ktuberling/sounds)
#   --oos-per-lang N     utterances per language in dev_oos and test_oos (default 30; 0: none)
#   --oos-dev-langs L,.. languages of dev_oos (default sk,tr,et,is: none of test_oos's nor
#                        test_human_oos's, so that no test language chose the threshold)
#   --oos-test-langs L,..  languages of test_oos (default el,nb,bg,hr); a language of the
#                        corpus is left out of either
#   --other-per-lang N   utterances per language of an "other" class in train (default 0:
#                        none; e.g. 8: 160 utterances of the 20 languages below)
#   --other-langs L,..   its languages (default: 20 that are none of the corpus's, dev_oos's,
#                        test_oos's nor KTuberling's, so that no test language is trained on)
#   --no-conditions      build train, dev and test only (and train's "other" utterances)
#   --no-dev-conditions  no dev_noisy, dev_reverb, dev_tel (dev through the test conditions'
#                        options, seed + 3000: to choose settings for those conditions on)
# Each option also as --name=value; all but the last eight are those of `lre prepare synth`
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
train_voices=
no_progress=false
ktuberling=/usr/share/ktuberling/sounds
oos_per_lang=30
oos_dev_langs=sk,tr,et,is
oos_test_langs=el,nb,bg,hr
other_per_lang=0
other_langs=af,az,be,bn,cy,eo,eu,fa,gd,he,hy,ka,kk,ko,lv,mk,ms,sq,sw,vi
no_conditions=false
no_dev_conditions=false
corpus=    # refused: the corpus is generated here
# shellcheck source=tools/parse_options.sh
. "$(dirname "${BASH_SOURCE[0]}")/../../tools/parse_options.sh"
# shellcheck source=recipes/prepare_lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../prepare_lib.sh"
prepare_data_root generated "$@"
prepare_forward nj seed langs train_per_lang dev_per_lang test_per_lang utts_per_spk \
  min_dur max_dur train_voice_mix train_voices --flags no_progress
find_lre
command -v espeak-ng >/dev/null || {
  echo "$0: espeak-ng is not installed; run tools/setup.sh (or: sudo apt-get install espeak-ng)" >&2
  exit 1
}
"$lre" prepare synth --out "$data_root" ${args[@]+"${args[@]}"}
[[ $oos_per_lang =~ ^[0-9]+$ ]] || { echo "$0: --oos-per-lang must be a number" >&2; exit 2; }
corpus_langs=" $( (cat "$data_root"/{train,dev,test}/utt2lang 2>/dev/null || true) \
  | cut -d' ' -f2 | LC_ALL=C sort -u | tr '\n' ' ')"
prepare_forward nj seed utts_per_spk min_dur max_dur --flags no_progress
oos_args=(${args[@]+"${args[@]}"})
oos_set() {  # oos_set SET SPLIT LANGS [N]: N (default --oos-per-lang) utterances of each of
  # the LANGS the corpus lacks, as SPLIT, into DATA_ROOT/SET
  local set=$1 split=$2 count=${4:-$oos_per_lang} lang keep=()
  for lang in ${3//,/ }; do
    if [[ $corpus_langs == *" $lang "* ]]; then
      echo "$0: $set: $lang is a language of the corpus; left out" >&2
    else
      keep+=("$lang")
    fi
  done
  if [ ${#keep[@]} -eq 0 ]; then
    echo "$0: $set: no language left; not built" >&2
    return 0
  fi
  # Generated under DATA_ROOT/oos (its own WAVs), then moved to its name.
  "$lre" prepare synth --out "$data_root/oos" --langs "$(IFS=,; echo "${keep[*]}")" \
    --train-per-lang 0 --dev-per-lang 0 --test-per-lang 0 "--$split-per-lang" "$count" \
    "${oos_args[@]}"
  rm -rf "${data_root:?}/$set"
  mv "$data_root/oos/$split" "$data_root/$set"
}

# The "other" class: its utterances join train under that one label (their own codes stay
# in the utterance ids), so that a model trained on them has one more output, for speech in
# none of its languages, which lre openset fit's other_class score reads.
[[ $other_per_lang =~ ^[0-9]+$ ]] || { echo "$0: --other-per-lang must be a number" >&2; exit 2; }
other_keep=
for lang in ${other_langs//,/ }; do  # an out-of-set dev or test language is never trained on
  case ",$oos_dev_langs,$oos_test_langs," in
    *",$lang,"*) echo "$0: train_other: $lang is a language of dev_oos or test_oos; left out" >&2 ;;
    *) other_keep+=${other_keep:+,}$lang ;;
  esac
done
if [ "$other_per_lang" -gt 0 ] && [ -n "$other_keep" ] && [ -f "$data_root/train/utt2lang" ]; then
  oos_set train_other train "$other_keep" "$other_per_lang"
  if [ -f "$data_root/train_other/utt2lang" ]; then
    awk '{print $1, "other"}' "$data_root/train_other/utt2lang" >"$data_root/train_other/utt2lang.tmp"
    mv "$data_root/train_other/utt2lang.tmp" "$data_root/train_other/utt2lang"
    rm -rf "${data_root:?}/train_inset"
    mv "$data_root/train" "$data_root/train_inset"
    "$lre" combine "$data_root/train" "$data_root/train_inset" "$data_root/train_other"
    rm -rf "${data_root:?}/train_inset" "${data_root:?}/train_other"
  fi
fi
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
augment() {  # augment IN SEED SET OPTIONS...: a copy of every utterance of DATA_ROOT/IN
  local in=$1 s=$2 set=$3; shift 3
  "$lre" augment --in "$data_root/$in" --out "$data_root/$set" --no-original \
    --seed "$s" --nj "$augment_nj" "$@"
}
conditions() {  # conditions IN SEED: IN_noisy, IN_reverb and IN_tel (babble from IN's own
  # utterances)
  augment "$1" "$2" "$1_noisy" --noise white,pink,babble --snr 0:15
  augment "$1" "$2" "$1_reverb" --reverb --rt60 0.3:0.9
  augment "$1" "$2" "$1_tel" --telephone --tel-codecs mulaw,gsm,opus
}
conditions test "$cond_seed"
# The dev conditions, made like the test ones with draws of their own: what chooses a
# setting for noise, reverberation or the telephone band (no test set does).
if ! $no_dev_conditions && [ -f "$data_root/dev/utt2lang" ]; then
  conditions dev "$(( ${seed:-0} + 3000 ))"
fi
cs_seed=$(( ${seed:-0} + 2000 ))
"$lre" prepare codeswitch --in "$test_dir" --out "$data_root/test_cs" --seed "$cs_seed"
if [ -f "$data_root/dev/utt2lang" ]; then
  "$lre" prepare codeswitch --in "$data_root/dev" --out "$data_root/dev_cs" \
    --seed "$(( cs_seed + 1 ))"
fi

if [ "$oos_per_lang" -gt 0 ]; then
  oos_set dev_oos dev "$oos_dev_langs"
  oos_set test_oos test "$oos_test_langs"
fi

if [ -d "$ktuberling" ]; then
  # The languages of the corpus are the ones a model trained on it knows.
  known=$(cut -d' ' -f2 "$test_dir/utt2lang" | LC_ALL=C sort -u | paste -sd, -)
  "$lre" prepare ktuberling --out "$data_root" --root "$ktuberling" --langs "$known" \
    --seed "$cond_seed" --nj "${nj:-2}"
else
  echo "$0: $ktuberling not found (Debian package ktuberling-data, see tools/setup.sh): test_human and test_human_oos skipped" >&2
fi
