# Sourced by scripts/test and scripts/dev: make .venv and install the project (with the dev
# extra) on a fresh machine; skip the install while pyproject.toml is unchanged.
# Sets repo_root and venv, cds to the repo root and puts .venv/bin first on PATH.

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

python="${PYTHON:-python3}"
venv="$repo_root/.venv"
stamp="$venv/.budgetd-install-stamp"
export PIP_DISABLE_PIP_VERSION_CHECK=1

step() {
    printf '\n==> %s\n' "$*"
}

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "budgetd needs Python 3.11 or newer; $python is $("$python" --version 2>&1)" >&2
    exit 1
fi

# A venv whose interpreter no longer runs (moved repo, removed Python) is rebuilt.
if [[ -d "$venv" ]] && ! "$venv/bin/python" -c '' >/dev/null 2>&1; then
    step "removing broken .venv"
    rm -rf "$venv"
fi

if [[ ! -d "$venv" ]]; then
    if ! "$python" -c 'import ensurepip, venv' 2>/dev/null && command -v apt-get >/dev/null; then
        step "installing python3-venv with apt-get"
        apt-get update -qq && apt-get install -y -qq python3-venv
    fi
    step "creating .venv with $("$python" --version 2>&1) ($(command -v "$python"))"
    "$python" -m venv "$venv"
fi

want_hash="$(sha256sum pyproject.toml | cut -d' ' -f1)"
have_hash="$(cat "$stamp" 2>/dev/null || true)"
if [[ "$want_hash" == "$have_hash" ]]; then
    step "install: pyproject.toml unchanged since last install, skipping"
else
    step "install: pip install -e '.[dev]'"
    rm -f "$stamp"
    start_s=$SECONDS
    "$venv/bin/python" -m pip install --quiet -e '.[dev]'
    echo "$want_hash" >"$stamp"
    echo "installed in $((SECONDS - start_s)) s"
fi

export PATH="$venv/bin:$PATH"
