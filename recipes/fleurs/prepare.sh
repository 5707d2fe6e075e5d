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
# Each option also as --name=value; they are those of `lre prepare fleurs` (see its -h).
# Ids and conventions: recipes/fleurs/README.md.
set -euo pipefail

# Options; empty: the default of `lre prepare fleurs`.
corpus=
nj=
langs=
lang_map=
min_duration=
no_probe=false
seed=      # accepted and ignored
# shellcheck source=tools/parse_options.sh
. "$(dirname "${BASH_SOURCE[0]}")/../../tools/parse_options.sh"
# shellcheck source=recipes/prepare_lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../prepare_lib.sh"
prepare_data_root corpus "$@"
prepare_forward nj langs lang_map min_duration --flags no_probe
find_lre
exec "$lre" prepare fleurs "$corpus" "$data_root" ${args[@]+"${args[@]}"}
