#!/usr/bin/env bash
# Existing Kaldi data dir(s) -> DATA_ROOT/<name> for each (run.sh expects train, dev, test),
# checked, with utt2lang from a file or from the ids.
#
# Usage: recipes/kaldi/prepare.sh --corpus CORPUS [options] <data-root>
#   --corpus DIR         a Kaldi data dir, or a folder of them (train/ dev/ test/)
#   --nj N               parallel jobs reading audio headers (default 4)
#   --langs a,b,...      languages to keep (default: all)
#   --lang-map FILE      'code label' lines renaming language labels
#   --min-duration S     skip audio shorter than S seconds (default 0.1)
#   --no-probe           only check that files exist (no header reads; faster)
#   --lang-from utt2lang|spk|spk-prefix|utt-prefix   where languages come from
#   --utt2lang FILE      an 'utt lang' file (single data dir)
#   --sep C              separator after the language prefix of ids (default -)
#   --name NAME          output set name for a single data dir
#   (--seed is accepted and ignored)
# Each option also as --name=value; they are those of `lre prepare kaldi` (see its -h).
# Ids and conventions: recipes/kaldi/README.md.
set -euo pipefail

# Options; empty: the default of `lre prepare kaldi`.
corpus=
nj=
langs=
lang_map=
min_duration=
no_probe=false
lang_from=
utt2lang=
sep=
name=
seed=      # accepted and ignored
# shellcheck source=tools/parse_options.sh
. "$(dirname "${BASH_SOURCE[0]}")/../../tools/parse_options.sh"
# shellcheck source=recipes/prepare_lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../prepare_lib.sh"
prepare_data_root corpus "$@"
prepare_forward nj langs lang_map min_duration lang_from utt2lang sep name --flags no_probe
find_lre
exec "$lre" prepare kaldi "$corpus" "$data_root" ${args[@]+"${args[@]}"}
