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
# Any other option is passed to `lre prepare commonvoice` (see `lre prepare commonvoice -h`).
# Ids and conventions: recipes/commonvoice/README.md.
set -euo pipefail

# shellcheck source=recipes/prepare_lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../prepare_lib.sh"
parse_prepare_args --flags "--no-probe --use-validated" --ignore-seed -- "$@"
find_lre
exec "$lre" prepare commonvoice "$corpus" "$data_root" ${args[@]+"${args[@]}"}
