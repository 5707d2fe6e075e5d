# Option parser of the shell scripts (run.sh, features/make_feats.sh, recipes/*/prepare.sh),
# sourced, not run. A script sets each option's default, then sources this file:
#
#   nj=4               # parallel jobs
#   force=false        # a boolean: its value is true or false
#   . "$(dirname "${BASH_SOURCE[0]}")/tools/parse_options.sh"
#
# It reads the options at the front of the script's arguments and shifts them away, so that
# "$@" is left with the positional arguments:
#   --name value, --name=value   set the variable `name` (dashes become underscores), which the
#                                script must have defined: anything else is an error,
#                                "unknown option --name", exit status 2
#   --name                       for a boolean (value true or false): sets it to true;
#                                --name true|false and --name=true|false set it explicitly
#   -h, --help                   print the script's usage and exit 0: its function `usage`
#                                if it defines one, else its leading comment block
#   --                           end of the options
# Options end at the first argument that does not start with --. An option's value is the
# next argument as it is, even when that starts with -- (--train-opts "--set epochs=5").
# Option names are lower case, so no option reaches a variable such as PATH or HOME; the
# parser's own variables begin with _po_ and are unset when it is done.

# The leading comment block of the running script, without its #! line and comment marks.
parse_options_usage() {
  awk 'NR == 1 { next } !/^#/ { exit } { sub(/^# ?/, ""); print }' "$0"
}

while [ $# -gt 0 ]; do
  case $1 in
    --) shift; break ;;
    -h|--help)
      if declare -F usage >/dev/null; then usage; else parse_options_usage; fi
      exit 0 ;;
    --?*) ;;
    *) break ;;
  esac
  _po_opt=${1%%=*}
  _po_name=${_po_opt#--}
  _po_name=${_po_name//-/_}
  # The name test comes first: ${!name} of a string that is no variable name is an error.
  if [[ ! $_po_name =~ ^[a-z][a-z0-9_]*$ ]] || [ -z "${!_po_name+set}" ]; then
    echo "$0: unknown option $_po_opt (see --help)" >&2
    exit 2
  fi
  _po_old=${!_po_name}
  case $_po_old in true|false) _po_bool=true ;; *) _po_bool=false ;; esac
  if [[ $1 == *=* ]]; then
    _po_value=${1#*=}
    shift
  elif $_po_bool; then
    shift
    _po_value=true
    if [ $# -gt 0 ] && { [ "$1" = true ] || [ "$1" = false ]; }; then
      _po_value=$1
      shift
    fi
  else
    if [ $# -lt 2 ]; then
      echo "$0: option $_po_opt needs a value" >&2
      exit 2
    fi
    _po_value=$2
    shift 2
  fi
  if $_po_bool && [[ $_po_value != true && $_po_value != false ]]; then
    echo "$0: option $_po_opt is true or false, not '$_po_value'" >&2
    exit 2
  fi
  printf -v "$_po_name" '%s' "$_po_value"
done
unset _po_opt _po_name _po_old _po_bool _po_value
