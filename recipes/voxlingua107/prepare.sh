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
#   --test-per-lang N    held out as test when there is no official dev set (default 50)
#   --seed N             seed for the held-out videos (default 0)
# Any other option is passed to `lre prepare voxlingua107` (see `lre prepare voxlingua107 -h`).
# Ids and conventions: recipes/voxlingua107/README.md.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; }

corpus=
data_root=
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --corpus)
      [ $# -ge 2 ] || { echo "$0: option $1 needs a value" >&2; exit 2; }
      corpus=$2; shift 2 ;;
    --no-probe) args+=("$1"); shift ;;
    --*=*) args+=("$1"); shift ;;
    --*)
      [ $# -ge 2 ] || { echo "$0: option $1 needs a value" >&2; exit 2; }
      args+=("$1" "$2"); shift 2 ;;
    *)
      [ -z "$data_root" ] || { echo "$0: more than one data root: $data_root $1" >&2; exit 2; }
      data_root=$1; shift ;;
  esac
done
[ -n "$data_root" ] || { usage >&2; exit 2; }
[ -n "$corpus" ] || { echo "$0: pass the corpus location with --corpus DIR" >&2; exit 2; }
[ -d "$corpus" ] || { echo "$0: $corpus: not a directory" >&2; exit 2; }

lre=lre
[ -x "${LRE_VENV:-$root/.venv}/bin/lre" ] && lre=${LRE_VENV:-$root/.venv}/bin/lre
command -v "$lre" >/dev/null || { echo "$0: lre is not installed; run tools/setup.sh" >&2; exit 1; }
exec "$lre" prepare voxlingua107 "$corpus" "$data_root" ${args[@]+"${args[@]}"}
