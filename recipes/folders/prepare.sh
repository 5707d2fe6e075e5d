#!/usr/bin/env bash
# A one-folder-per-language corpus -> Kaldi data dirs DATA_ROOT/{train,dev,test}, split
# at random per language by --ratios.
#
# Usage: recipes/folders/prepare.sh --corpus CORPUS [options] <data-root>
#   --corpus DIR         a folder holding <lang>/**/*.{wav,flac,mp3,ogg}
#   --nj N               parallel jobs reading audio headers (default 4)
#   --langs a,b,...      languages to keep (default: all)
#   --lang-map FILE      'code label' lines renaming language labels
#   --min-duration S     skip audio shorter than S seconds (default 0.1)
#   --no-probe           only check that files exist (no header reads; faster)
#   --ratios 0.8,0.1,0.1 train,dev,test shares per language
#   --speaker-from none|dir   'dir': the first folder under <lang>/ is the speaker
#   --split-by utt|speaker    (default: speaker when --speaker-from dir)
#   --extensions .wav,...     audio file extensions (default .wav,.flac,.mp3,.ogg)
#   --seed N             seed of the random split (default 0)
# Each option also as --name=value; they are those of `lre prepare folders` (see its -h).
# Ids and conventions: recipes/folders/README.md.
set -euo pipefail

# Options; empty: the default of `lre prepare folders`.
corpus=
nj=
langs=
lang_map=
min_duration=
no_probe=false
ratios=
speaker_from=
split_by=
extensions=
seed=
# shellcheck source=tools/parse_options.sh
. "$(dirname "${BASH_SOURCE[0]}")/../../tools/parse_options.sh"
# shellcheck source=recipes/prepare_lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../prepare_lib.sh"
prepare_data_root corpus "$@"
prepare_forward nj langs lang_map min_duration ratios speaker_from split_by extensions seed \
  --flags no_probe
find_lre
exec "$lre" prepare folders "$corpus" "$data_root" ${args[@]+"${args[@]}"}
