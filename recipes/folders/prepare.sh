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
#   --seed N             seed of the random split (default 0)
# Any other option is passed to `lre prepare folders` (see `lre prepare folders -h`).
# Ids and conventions: recipes/folders/README.md.
set -euo pipefail

# shellcheck source=recipes/prepare_lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../prepare_lib.sh"
parse_prepare_args --flags "--no-probe" -- "$@"
find_lre
exec "$lre" prepare folders "$corpus" "$data_root" ${args[@]+"${args[@]}"}
