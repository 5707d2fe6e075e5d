#!/usr/bin/env bash
# FLEURS -> Kaldi data dirs DATA_ROOT/{train,dev,test} from <lang>/{train,dev,test}.tsv.
#
# Usage: recipes/fleurs/prepare.sh --corpus CORPUS [options] <data-root>
#   --corpus DIR         the FLEURS root (<lang>_<region>/ folders) or one language folder
#   --nj N               parallel jobs reading audio headers (default 4)
#   --langs a,b,...      languages to keep (default: all)
#   --lang-map FILE      'code label' lines renaming language labels
#   --min-duration S     skip audio shorter than S seconds (default 0.1)
#   --no-probe           only check that files exist (no header reads; faster)
#   (--seed is accepted and ignored: the official splits are used)
# Any other option is passed to `lre prepare fleurs` (see `lre prepare fleurs -h`).
# Ids and conventions: recipes/fleurs/README.md.
set -euo pipefail

# shellcheck source=recipes/prepare_lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../prepare_lib.sh"
parse_prepare_args --flags "--no-probe" --ignore-seed -- "$@"
find_lre
exec "$lre" prepare fleurs "$corpus" "$data_root" ${args[@]+"${args[@]}"}
