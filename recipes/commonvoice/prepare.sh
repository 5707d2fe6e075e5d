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

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; }

corpus=
data_root=
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --corpus)
      [ $# -ge 2 ] || { echo "$0: option $1 needs a value" >&2; exit 2; }
      corpus=$2; shift 2 ;;
    --seed)
      [ $# -ge 2 ] || { echo "$0: option $1 needs a value" >&2; exit 2; }
      shift 2 ;;  # official splits: nothing random to seed
    --no-probe|--use-validated) args+=("$1"); shift ;;
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
exec "$lre" prepare commonvoice "$corpus" "$data_root" ${args[@]+"${args[@]}"}
