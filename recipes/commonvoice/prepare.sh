#!/usr/bin/env bash
# Mozilla Common Voice -> Kaldi data dirs DATA_ROOT/{train,dev,test} from the official
# train/dev/test.tsv of each locale.
#
# Usage: recipes/commonvoice/prepare.sh --corpus CORPUS [options] <data-root>
#   --corpus DIR         a cv-corpus-<version> folder (locale folders) or one locale folder
#   --nj N               parallel jobs reading audio headers (default 4)
#   --langs a,b,...      languages to keep (default: all)
#   --lang-map FILE      'code label' lines renaming language labels
#   --min-duration S     skip audio shorter than S seconds (default 0.1)
#   --no-probe           only check that files exist (no header reads; faster)
#   --use-validated      train on all validated clips of speakers not in dev/test
#   --mp3 auto|path|ffmpeg  read clips with soundfile (default when it can) or ffmpeg
#   (--seed is accepted and ignored: the official splits are used)
# Each option also as --name=value; they are those of `lre prepare commonvoice` (see its -h).
# Ids and conventions: recipes/commonvoice/README.md.
set -euo pipefail

# Options; empty: the default of `lre prepare commonvoice`.
corpus=
nj=
langs=
lang_map=
min_duration=
no_probe=false
use_validated=false
mp3=
seed=      # accepted and ignored
# shellcheck source=tools/parse_options.sh
. "$(dirname "${BASH_SOURCE[0]}")/../../tools/parse_options.sh"
# shellcheck source=recipes/prepare_lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../prepare_lib.sh"
prepare_data_root corpus "$@"
prepare_forward nj langs lang_map min_duration mp3 --flags no_probe use_validated
find_lre
exec "$lre" prepare commonvoice "$corpus" "$data_root" ${args[@]+"${args[@]}"}
