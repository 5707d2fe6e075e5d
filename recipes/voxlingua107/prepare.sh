#!/usr/bin/env bash
# VoxLingua107 -> Kaldi data dirs DATA_ROOT/{train,dev,test}: train minus held-out videos,
# dev held out from train, test = the official dev set.
#
# Usage: recipes/voxlingua107/prepare.sh --corpus CORPUS [options] <data-root>
#   --corpus DIR         the extracted corpus: <code>/*.wav folders (+ dev/ from dev.zip)
#   --nj N               parallel jobs reading audio headers (default 4)
#   --langs a,b,...      languages to keep (default: all)
#   --lang-map FILE      'code label' lines renaming language labels
#   --min-duration S     skip audio shorter than S seconds (default 0.1)
#   --no-probe           only check that files exist (no header reads; faster)
#   --official-dev DIR   the extracted dev.zip (default: CORPUS/dev)
#   --dev-per-lang N     utterances per language held out as dev, whole videos (default 50)
#   --dev-split video|utterance  utterance: languages with a single video get some of its
#                        utterances held out for dev (default video: whole videos only)
#   --test-per-lang N    held out as test when there is no official dev set (default 50)
#   --seed N             seed for the held-out videos (default 0)
# Each option also as --name=value; they are those of `lre prepare voxlingua107` (see its -h).
# Ids and conventions: recipes/voxlingua107/README.md.
set -euo pipefail

# Options; empty: the default of `lre prepare voxlingua107`.
corpus=
nj=
langs=
lang_map=
min_duration=
no_probe=false
official_dev=
dev_per_lang=
dev_split=
test_per_lang=
seed=
# shellcheck source=tools/parse_options.sh
. "$(dirname "${BASH_SOURCE[0]}")/../../tools/parse_options.sh"
# shellcheck source=recipes/prepare_lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../prepare_lib.sh"
prepare_data_root corpus "$@"
prepare_forward nj langs lang_map min_duration official_dev dev_per_lang dev_split test_per_lang seed \
  --flags no_probe
find_lre
exec "$lre" prepare voxlingua107 "$corpus" "$data_root" ${args[@]+"${args[@]}"}
