#!/usr/bin/env bash
# Install everything the platform needs on a fresh Debian 12 machine. Idempotent: a second run
# checks and returns in seconds. Run as root (or with sudo available for the apt step).
#
#   Debian packages : orthanc, orthanc-dicomweb (the PACS), dcmtk, dicom3tools (dciodvfy), redis-server,
#                     chromium (headless browser tests of the dashboards through pip's playwright,
#                     which drives /usr/bin/chromium: `playwright install` is never run)
#   npm             : configurable-http-proxy 5.3.0 (JupyterHub's proxy), into .venv/bin
#   Python          : .venv with torch==2.13.0 (the CPU build, or the CUDA build where an NVIDIA GPU
#                     is present; installed first), then requirements.lock
#
# Environment:
#   PYTHON           the interpreter for the venv (default python3; 3.11 tested)
#   MEDIMG_TORCH     auto (default): the CUDA build of torch when nvidia-smi lists a GPU, else the CPU
#                    build; cpu or cuda to choose. The bootstrap says which it installed.
#   TORCH_INDEX_URL  a pip index serving CPU builds of torch, where the default index would
#                    give a CUDA build (in cpu mode the bootstrap refuses to install a CUDA build)
#   TORCH_CUDA_INDEX_URL  a pip index serving CUDA builds of torch 2.13.0 (cuda mode; default: pip's)
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '\033[1m[bootstrap]\033[0m %s\n' "$*" >&2; }
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"

# --- Debian packages -----------------------------------------------------------------------
APT_PACKAGES=(orthanc orthanc-dicomweb dcmtk dicom3tools redis-server postgresql python3.11 chromium nftables stunnel4)
command -v npm >/dev/null || APT_PACKAGES+=(nodejs npm)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# The platform runs its own Orthanc and Redis under var/. Debian's system services would listen on
# 8042 / 4242 (DICOM, all interfaces, no authentication) and 6379: stop and disable them.
if [ -d /run/systemd/system ]; then
  for svc in orthanc redis-server; do
    if systemctl is-enabled --quiet "$svc" 2>/dev/null || systemctl is-active --quiet "$svc" 2>/dev/null; then
      say "disabling Debian's own $svc service (the platform runs its own instance)"
      $SUDO systemctl disable --now "$svc" || true
    fi
  done
fi

# --- Python virtual environment -------------------------------------------------------------
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || { say "creating .venv with $PY"; "$PY" -m venv .venv; }
# Which torch: the CUDA build only where a GPU is there to use it (or by MEDIMG_TORCH=cuda)
torch_mode="${MEDIMG_TORCH:-auto}"
gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)
if [ "$torch_mode" = auto ]; then
  if [ "${gpus:-0}" -gt 0 ]; then torch_mode=cuda; else torch_mode=cpu; fi
fi
case "$torch_mode" in
  cpu|cuda) ;;
  *) say "error: MEDIMG_TORCH=$torch_mode: use auto, cpu or cuda"; exit 1 ;;
esac
stamp=.venv/.medimg-installed
want=$( (cat requirements.lock requirements/*.lock pyproject.toml scripts/bootstrap.sh; echo "$torch_mode") | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  torch_index=(); [ -n "${TORCH_INDEX_URL:-}" ] && torch_index=(--index-url "$TORCH_INDEX_URL")
  cuda_index=(); [ -n "${TORCH_CUDA_INDEX_URL:-}" ] && cuda_index=(--index-url "$TORCH_CUDA_INDEX_URL")
  # the installed torch is right when it is 2.13.0 of the wanted build (torch.version.cuda is None on CPU builds)
  have_torch() {
    .venv/bin/python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0'
                          or (torch.version.cuda is None) != ('$torch_mode' == 'cpu'))" 2>/dev/null
  }
  if [ "$torch_mode" = cuda ] && ! have_torch; then
    say "installing torch 2.13.0 (CUDA build: ${gpus:-0} NVIDIA GPU(s) listed by nvidia-smi, MEDIMG_TORCH=${MEDIMG_TORCH:-auto})"
    .venv/bin/python -m pip install -q --force-reinstall "${cuda_index[@]}" torch==2.13.0
  fi
  if [ "$torch_mode" = cpu ] && ! have_torch; then
    # Refuse a CUDA build before downloading it: ask pip what it would install.
    .venv/bin/python -m pip install -q --dry-run --ignore-installed --no-deps --report .venv/torch-plan.json \
      "${torch_index[@]}" torch==2.13.0
    .venv/bin/python - <<'PYEOF'
import json, sys
plan = json.load(open(".venv/torch-plan.json"))
url = plan["install"][0]["download_info"]["url"]
if "+cpu" not in url and "cpu" not in url.rsplit("/", 1)[-1]:
    sys.exit(f"[bootstrap] pip would install a non-CPU torch ({url.rsplit('/', 1)[-1]}); "
             "set TORCH_INDEX_URL to a pip index with CPU builds of torch 2.13.0")
PYEOF
    say "installing torch 2.13.0 (CPU build: no NVIDIA GPU listed by nvidia-smi, MEDIMG_TORCH=${MEDIMG_TORCH:-auto})"
    .venv/bin/python -m pip install -q --force-reinstall --no-deps "${torch_index[@]}" torch==2.13.0
  fi
  # requirements.lock is every room together (requirements/*.lock, written by scripts/lock.py): CI needs all
  say "installing Python dependencies (requirements.lock: every room)"
  .venv/bin/python -m pip install -q -r requirements.lock
  .venv/bin/python -m pip install -q --no-deps -e . > .venv/editable-install.log 2>&1 \
    || { cat .venv/editable-install.log; exit 1; }
  if [ "$torch_mode" = cpu ] && .venv/bin/python -m pip list 2>/dev/null | grep -qiE '^nvidia-|^triton '; then
    say "error: CUDA packages were pulled into .venv; remove .venv and set TORCH_INDEX_URL"; exit 1
  fi
  echo "$want" > "$stamp"
fi

# --- users' environment: the kernel side only ------------------------------------------------
# Users' servers and kernels run .venv-users: Debian's python3.11 (executable by every OS account,
# unlike a Python under /root) over .venv's packages, added as a plain path so that .venv's .pth
# files are not processed: the project's editable install, which maps medimg_hub, stays out. The
# repository root and federated/ are added instead: medimg_kernel, medimg_voila and the Flower app
# (medimg_federated), never hub/ (the trust boundary).
site_dir=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if [ ! -x .venv-users/bin/python ]; then
  say "creating .venv-users (Debian python3.11 over .venv's packages, kernel side only) for users' servers"
  /usr/bin/python3.11 -m venv --without-pip .venv-users
fi
printf '%s\n%s\n%s\n' "$site_dir" "$(pwd)" "$(pwd)/federated" > .venv-users/lib/python3.11/site-packages/medimg-project.pth
mkdir -p .venv-users/share .venv-users/etc  # Jupyter's data (Voila templates, Lab assets) and config (server extensions)
ln -sfn "$(pwd)/.venv/share/jupyter" .venv-users/share/jupyter
ln -sfn "$(pwd)/.venv/etc/jupyter" .venv-users/etc/jupyter
# JupyterLab's defaults for every user (hub/lab/overrides.json): no news prompt and no update check,
# both of which would fetch from the internet
mkdir -p .venv/share/jupyter/lab/settings
cp hub/lab/overrides.json .venv/share/jupyter/lab/settings/overrides.json
# (the caller's PYTHONPATH left out: users' servers get their own, set by the hub, never with hub/)
if env -u PYTHONPATH .venv-users/bin/python -c 'import medimg_hub' 2>/dev/null; then
  say "error: users' environment (.venv-users) can import medimg_hub"; exit 1
fi

# --- configurable-http-proxy (JupyterHub's proxy) ------------------------------------------
if [ ! -x .venv/bin/configurable-http-proxy ]; then
  say "installing configurable-http-proxy 5.3.0 from npm into .venv"
  npm install -g --silent --no-fund --no-audit --prefix .venv configurable-http-proxy@5.3.0 >/dev/null
fi
torch_line=$(.venv/bin/python -c 'import torch
build = f"CUDA {torch.version.cuda} build, {torch.cuda.device_count()} GPU(s) usable" if torch.version.cuda else "CPU build"
print(f"{torch.__version__} ({build})")')
say "ready: $(.venv/bin/python --version), torch $torch_line, $(/usr/sbin/Orthanc --version 2>/dev/null | head -1)"
