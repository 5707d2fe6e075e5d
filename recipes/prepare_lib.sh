# Shared option handling of the recipes' prepare.sh scripts (sourced, not run).
#
# A prepare.sh documents its options in its leading comment block (printed by --help), then:
#   . "$(dirname "${BASH_SOURCE[0]}")/../prepare_lib.sh"
#   parse_prepare_args [--flags "--a --b"] [--ignore-seed] [--no-corpus] -- "$@"
#   find_lre
#   exec "$lre" prepare <corpus> "$corpus" "$data_root" ${args[@]+"${args[@]}"}
# which leaves the corpus location in $corpus, the data root in $data_root and every other
# option in the array $args, for `lre prepare` to check.

prepare_usage() { sed -n '2,/^[^#]/p' "$0" | sed -n 's/^# \{0,1\}//p'; }

prepare_die() { echo "$0: $*" >&2; exit 2; }

# Options: --flags "LIST" names options that take no value; --ignore-seed accepts and drops
# --seed N (a corpus with official splits has nothing random); --no-corpus refuses --corpus
# (a corpus the recipe builds itself). Without --no-corpus, --corpus DIR is required.
parse_prepare_args() {
  local flags="" ignore_seed=false needs_corpus=true
  while [ $# -gt 0 ]; do
    case "$1" in
      --flags) flags=$2; shift 2 ;;
      --ignore-seed) ignore_seed=true; shift ;;
      --no-corpus) needs_corpus=false; shift ;;
      --) shift; break ;;
      *) prepare_die "parse_prepare_args: unknown option $1" ;;
    esac
  done
  corpus=
  data_root=
  args=()
  while [ $# -gt 0 ]; do
    case "$1" in
      -h|--help) prepare_usage; exit 0 ;;
      --corpus)
        $needs_corpus || prepare_die "this corpus is generated here; it takes no --corpus"
        [ $# -ge 2 ] || prepare_die "option $1 needs a value"
        corpus=$2; shift 2 ;;
      --seed)
        [ $# -ge 2 ] || prepare_die "option $1 needs a value"
        $ignore_seed || args+=("$1" "$2")
        shift 2 ;;
      --*=*) args+=("$1"); shift ;;
      --*)
        if [[ " $flags " == *" $1 "* ]]; then
          args+=("$1"); shift
        else
          [ $# -ge 2 ] || prepare_die "option $1 needs a value"
          args+=("$1" "$2"); shift 2
        fi ;;
      *)
        [ -z "$data_root" ] || prepare_die "more than one data root: $data_root $1"
        data_root=$1; shift ;;
    esac
  done
  [ -n "$data_root" ] || { prepare_usage >&2; exit 2; }
  if $needs_corpus; then
    [ -n "$corpus" ] || prepare_die "pass the corpus location with --corpus DIR"
    [ -d "$corpus" ] || prepare_die "$corpus: not a directory"
  fi
}

# Sets $lre: the project's venv's lre when there is one, else the one on PATH.
find_lre() {
  local root
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  lre=${LRE_VENV:-$root/.venv}/bin/lre
  [ -x "$lre" ] || lre=lre
  command -v "$lre" >/dev/null || { echo "$0: lre is not installed; run tools/setup.sh" >&2; exit 1; }
}
