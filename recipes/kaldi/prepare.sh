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
# Any other option is passed to `lre prepare kaldi` (see `lre prepare kaldi -h`).
# Ids and conventions: recipes/kaldi/README.md.
set -euo pipefail

# shellcheck source=recipes/prepare_lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../prepare_lib.sh"
parse_prepare_args --flags "--no-probe" --ignore-seed -- "$@"
find_lre
exec "$lre" prepare kaldi "$corpus" "$data_root" ${args[@]+"${args[@]}"}
