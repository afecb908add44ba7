#!/usr/bin/env bash
# The first run on an accelerator: scripts/accelerator_check.py, with what
# the device machine lacks installed from wheels carried in .whl/ (if any).
#
#   bash scripts/accelerator_check.sh                 # about 8 minutes on an H100
#   JAX_PLATFORMS=cpu bash scripts/accelerator_check.sh --small   # a CPU trial
#
# Extra arguments go to the Python script; the report goes to
# $OUT/accelerator_check.json when OUT is set, else out/.
set -euo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${OUT:-}" ] && PYTHON=.venv/bin/python
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || true
exec "$PYTHON" scripts/accelerator_check.py \
  --out="${OUT:-out}/accelerator_check.json" "$@"
