# Shared by scripts/soak.sh and scripts/bench.sh (sourced, not run).

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

# Installs wrk from Debian/Ubuntu (apt) when it is missing; $1 names the
# caller in the error when it cannot.
ensure_wrk() {
  command -v wrk >/dev/null && return 0
  step "installing wrk (apt)"
  if [[ $(id -u) == 0 ]]; then
    apt-get install -y -qq wrk || { apt-get update -qq && apt-get install -y -qq wrk; }
  elif command -v sudo >/dev/null; then
    sudo apt-get install -y -qq wrk || { sudo apt-get update -qq && sudo apt-get install -y -qq wrk; }
  else
    echo "$1: wrk is not installed and there is no sudo; install the 'wrk' package" >&2
    exit 1
  fi
}
