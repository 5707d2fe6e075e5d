# Helpers of the recipes' prepare.sh scripts (sourced, not run).
#
# A prepare.sh documents its options in its leading comment block (printed by --help), sets
# one variable per option (empty: the default of `lre prepare`; false: a flag not given),
# reads them with tools/parse_options.sh, then:
#   . "$(dirname "${BASH_SOURCE[0]}")/../prepare_lib.sh"
#   prepare_data_root corpus "$@"          # or: generated "$@"
#   prepare_forward nj langs ... --flags no_probe ...
#   find_lre
#   exec "$lre" prepare <corpus> "$corpus" "$data_root" ${args[@]+"${args[@]}"}
# which leaves the data root in $data_root and the options for `lre prepare` in the array
# $args; `lre prepare` checks their values.

prepare_die() { echo "$0: $*" >&2; exit 2; }

# prepare_data_root corpus|generated ARG...: ARG... are the positional arguments left by the
# option parser, one data root, put in $data_root. `corpus`: --corpus DIR is required and
# must exist; `generated`: the recipe builds its corpus and takes no --corpus.
prepare_data_root() {
  local _kind=$1; shift
  [ $# -ge 1 ] || { parse_options_usage >&2; exit 2; }
  [ $# -eq 1 ] || prepare_die "more than one data root: $*"
  data_root=$1
  if [ "$_kind" = corpus ]; then
    [ -n "$corpus" ] || prepare_die "pass the corpus location with --corpus DIR"
    [ -d "$corpus" ] || prepare_die "$corpus: not a directory"
  elif [ -n "${corpus:-}" ]; then
    prepare_die "this corpus is generated here; it takes no --corpus"
  fi
}

# prepare_forward NAME... [--flags NAME...]: $args, the options `--name value` of the named
# variables that are not empty, then `--name` for each flag variable that is true.
prepare_forward() {
  # Locals begin with _ so that they never hide an option variable (options are lower case).
  local _var _flags=false
  args=()
  for _var; do
    if [ "$_var" = --flags ]; then
      _flags=true
    elif $_flags; then
      if [ "${!_var}" = true ]; then args+=("--${_var//_/-}"); fi
    elif [ -n "${!_var}" ]; then
      args+=("--${_var//_/-}" "${!_var}")
    fi
  done
}

# Sets $lre: the project's venv's lre when there is one, else the one on PATH.
find_lre() {
  local root
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  lre=${LRE_VENV:-$root/.venv}/bin/lre
  [ -x "$lre" ] || lre=lre
  command -v "$lre" >/dev/null || { echo "$0: lre is not installed; run tools/setup.sh" >&2; exit 1; }
}
