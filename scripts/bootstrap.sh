#!/usr/bin/env bash
# Create the project's virtualenvs. Idempotent: a second run with an unchanged
# pyproject.toml returns in well under a second.
#
#   .venv                      Python 3.12, `pip install -e '.[dev]'`
#   .local/checkov-venv        Python 3.12, checkov (the template's security scan in
#                              `make lint`; its own venv: checkov pins boto3 and packaging
#                              versions that the project's venv must not be downgraded to)
#   .local/localstack-venv     Python 3.13, localstack-core (optional: without
#                              Python 3.13 the tests fall back to moto's server)
#
# Environment overrides: PYTHON312=/path/to/python3.12, PYTHON313=/path/to/python3.13,
# SKIP_LOCALSTACK=1 (don't build the LocalStack venv).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VENV="$ROOT/.venv"
STAMP="$VENV/.installed"
LS_VENV="$ROOT/.local/localstack-venv"
LS_STAMP="$LS_VENV/.installed"
LS_PINS=("localstack-core[runtime]==2026.3.0" "cbor2<6" "pyopenssl<26" "cryptography<47" "service_identity")
CK_VENV="$ROOT/.local/checkov-venv"
CK_STAMP="$CK_VENV/.installed"
CK_PINS=("checkov==3.3.30")
PIP_LOG="$ROOT/.local/pip-install.log"

log() { printf 'bootstrap: %s\n' "$*" >&2; }

# is_python VERSION CANDIDATE: CANDIDATE runs and is exactly Python VERSION (e.g. 3.12).
is_python() {
    local want="$1" cand="$2"
    [[ -n "$cand" ]] || return 1
    "$cand" -c "import sys; sys.exit(0 if '%d.%d' % sys.version_info[:2] == '$want' else 1)" \
        >/dev/null 2>&1
}

# find_python VERSION: print the path of a working interpreter for VERSION, or fail.
find_python() {
    local want="$1" override="$2" cand root
    local -a cands=()
    [[ -n "$override" ]] && cands+=("$override")
    # A pyenv shim on PATH may exist but refuse to run when the version isn't selected;
    # is_python weeds those out.
    cand="$(command -v "python$want" 2>/dev/null || true)"
    [[ -n "$cand" ]] && cands+=("$cand")
    for root in "${PYENV_ROOT:-}" "$HOME/.pyenv" "$(pyenv root 2>/dev/null || true)"; do
        [[ -n "$root" && -d "$root/versions" ]] || continue
        # newest patch release first
        while IFS= read -r cand; do
            cands+=("$cand/bin/python$want")
        done < <(ls -d "$root/versions/$want".* "$root/versions/$want" 2>/dev/null | sort -rV)
    done
    cands+=("/usr/bin/python$want" "/usr/local/bin/python$want")
    for cand in "${cands[@]}"; do
        if is_python "$want" "$cand"; then
            printf '%s\n' "$cand"
            return 0
        fi
    done
    return 1
}

# pip_install VENV_PYTHON ARGS...: quiet install; full log in .local/pip-install.log on failure.
pip_install() {
    local py="$1"
    shift
    if ! "$py" -m pip install --disable-pip-version-check --progress-bar off -q "$@" \
        >>"$PIP_LOG" 2>&1; then
        log "pip install failed; last lines of $PIP_LOG:"
        grep -v 'is ignored: it is neither a file nor a directory' "$PIP_LOG" | tail -n 30 >&2
        return 1
    fi
}

mkdir -p "$ROOT/.local"

# ---------------------------------------------------------------- project venv (3.12)
# pyproject.toml reads its dependencies from the layer's requirements: a change to either reinstalls.
if [[ -f "$STAMP" && "$STAMP" -nt "$ROOT/pyproject.toml" && "$STAMP" -nt "$ROOT/layers/common/requirements.txt" \
    && -x "$VENV/bin/python" ]] && is_python 3.12 "$VENV/bin/python"; then
    log ".venv is up to date"
else
    if ! PY312="$(find_python 3.12 "${PYTHON312:-}")"; then
        log "ERROR: Python 3.12 not found (looked for python3.12 on PATH and in pyenv's versions)."
        log "       Install CPython 3.12 (e.g. 'pyenv install 3.12' where the network allows it)"
        log "       or point PYTHON312 at an interpreter, then re-run."
        exit 1
    fi
    log "creating .venv with $PY312"
    start=$SECONDS
    if [[ -x "$VENV/bin/python" ]] && ! is_python 3.12 "$VENV/bin/python"; then
        log "existing .venv is not a working Python 3.12 venv; recreating it"
        rm -rf "$VENV"
    fi
    [[ -x "$VENV/bin/python" ]] || "$PY312" -m venv "$VENV"
    : >"$PIP_LOG"
    pip_install "$VENV/bin/python" -e '.[dev]'
    touch "$STAMP"
    log ".venv ready ($((SECONDS - start)) s)"
fi

# ---------------------------------------------------------------- Chromium (the console's browser tests)
# tests/browser drives Debian's Chromium through Playwright (no `playwright install`, no download of
# a browser build): installed here when missing and this runs as root with apt-get; otherwise a warning.
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
if [[ -x "$CHROMIUM" ]]; then
    log "chromium found at $CHROMIUM"
elif [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    log "installing Debian's chromium (apt-get) for the console's browser tests"
    if ! { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium \
        >>"$PIP_LOG" 2>&1 || { apt-get update -qq >>"$PIP_LOG" 2>&1 \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium \
        >>"$PIP_LOG" 2>&1; }; }; then
        log "WARNING: apt-get install chromium failed (see $PIP_LOG); tests/browser will fail"
    fi
else
    log "WARNING: no chromium at $CHROMIUM and not root: install it (apt-get install chromium)"
    log "         or set CHROMIUM=/path/to/chromium; tests/browser needs it"
fi

# ---------------------------------------------------------------- checkov venv (3.12)
# Installed in the background while the LocalStack venv is (both are mostly downloads and unpacking);
# finish_checkov waits for it before the script ends.
want_ck="${CK_PINS[*]}"
CK_LOG="$ROOT/.local/pip-install-checkov.log"
ck_pid=""
if [[ -f "$CK_STAMP" && "$(cat "$CK_STAMP")" == "$want_ck" && -x "$CK_VENV/bin/checkov" ]]; then
    log ".local/checkov-venv is up to date"
else
    log "creating .local/checkov-venv (checkov for make lint), in the background"
    rm -f "$CK_STAMP"
    (
        start=$SECONDS
        if [[ ! -x "$CK_VENV/bin/python" ]]; then
            # the interpreter .venv was made from (Python 3.12)
            "$("$VENV/bin/python" -c 'import sys; print(sys._base_executable)')" -m venv "$CK_VENV"
        fi
        "$CK_VENV/bin/python" -m pip install --disable-pip-version-check --progress-bar off -q \
            "${CK_PINS[@]}" >"$CK_LOG" 2>&1
        printf '%s' "$want_ck" >"$CK_STAMP"
        log ".local/checkov-venv ready ($((SECONDS - start)) s)"
    ) &
    ck_pid=$!
fi

finish_checkov() {
    [[ -n "$ck_pid" ]] || return 0
    if ! wait "$ck_pid"; then
        log "checkov install failed; last lines of $CK_LOG:"
        grep -v 'is ignored: it is neither a file nor a directory' "$CK_LOG" | tail -n 30 >&2
        exit 1
    fi
}

# ---------------------------------------------------------------- LocalStack venv (3.13)
if [[ "${SKIP_LOCALSTACK:-0}" == 1 ]]; then
    log "SKIP_LOCALSTACK=1: not building the LocalStack venv"
    finish_checkov
    exit 0
fi
want_pins="${LS_PINS[*]}"
if [[ -f "$LS_STAMP" && "$(cat "$LS_STAMP")" == "$want_pins" && -x "$LS_VENV/bin/python" ]] \
    && is_python 3.13 "$LS_VENV/bin/python"; then
    log ".local/localstack-venv is up to date"
elif PY313="$(find_python 3.13 "${PYTHON313:-}")"; then
    log "creating .local/localstack-venv with $PY313 (LocalStack runs on Python 3.13 only)"
    start=$SECONDS
    rm -f "$LS_STAMP"
    if [[ -x "$LS_VENV/bin/python" ]] && ! is_python 3.13 "$LS_VENV/bin/python"; then
        rm -rf "$LS_VENV"
    fi
    [[ -x "$LS_VENV/bin/python" ]] || "$PY313" -m venv "$LS_VENV"
    : >"$PIP_LOG"
    pip_install "$LS_VENV/bin/python" "${LS_PINS[@]}"
    printf '%s' "$want_pins" >"$LS_STAMP"
    log ".local/localstack-venv ready ($((SECONDS - start)) s)"
else
    log "Python 3.13 not found: no LocalStack venv; tests and 'make services' use moto's server instead"
fi
finish_checkov
