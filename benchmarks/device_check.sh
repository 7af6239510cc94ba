#!/usr/bin/env bash
# otreg's GPU check, in one go on a machine with a CUDA GPU (benchmarks/README.md, "GPU check").
#
#   bash benchmarks/device_check.sh                      # on the GPU machine: everything
#   OUT=/tmp/out bash benchmarks/device_check.sh --device cpu --quick --no-wheels   # dry run
#
# Parts, each under `timeout` and within one overall budget (BUDGET seconds, default 450):
#   1. wheels: the Python packages the machine lacks, from .whl/ (no network there)
#   2. build: otreg's compiled CPU kernels for this Python (the certificate and the CPU path)
#   3. tests: tests/test_gpu_path.py, the CUDA tests (-k cuda) or, with --device cpu, all
#   4. solver: bench_solver.py, otreg beside GeomLoss multiscale and FlashSinkhorn, 10k-1M
#   5. register: the copd1 registration (bench_register_device.py, .devdata/), on the device,
#      then on the CPU for reference
# Everything printed goes to $OUT/log.txt too; a table of the parts closes it.
set -u
cd "$(dirname "$0")/.."
DEVICE=cuda
QUICK=0
WHEELS=1
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --no-wheels) WHEELS=0; shift ;;
    *) echo "unknown argument $1 (--device cuda|cpu, --quick, --no-wheels)"; exit 2 ;;
  esac
done
OUT="${OUT:-/tmp/otreg_device_check}"
BUDGET="${BUDGET:-450}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec > >(tee -a "$OUT/log.txt") 2>&1
PY=python3
DEADLINE=$((SECONDS + BUDGET))
SUMMARY=()

# part NAME LIMIT COMMAND...: run COMMAND under timeout (LIMIT, or what is left of the budget)
part() {
  local name="$1" limit="$2" left start rc
  shift 2
  left=$((DEADLINE - SECONDS))
  [ "$limit" -gt "$left" ] && limit=$left
  if [ "$limit" -lt 15 ]; then
    echo "=== $name: skipped, the budget is spent"
    SUMMARY+=("| $name | skipped (budget) | 0 |")
    return 0
  fi
  echo
  echo "=== $name (at most ${limit} s): $*"
  start=$SECONDS
  timeout -k 10 "$limit" "$@"
  rc=$?
  local status="ok"
  [ $rc -ne 0 ] && status="exit $rc"
  [ $rc -eq 124 ] && status="TIMED OUT after ${limit} s"
  SUMMARY+=("| $name | $status | $((SECONDS - start)) |")
  return 0
}

echo "=== otreg device check: device $DEVICE, quick $QUICK, budget ${BUDGET} s, $(date -u)"
git log -1 --format='commit %h %s' 2>/dev/null || true
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available())"
python3 -c "import os; print(os.cpu_count(), 'CPU cores')"

# pykeops goes to a folder of its own, on the path of the solver benchmark alone (GeomLoss
# needs it): otreg's own tests and registrations then run torch's kernels, whatever KeOps'
# compilations do on this machine
KEOPS_SITE=
if [ "$WHEELS" = 1 ] && ls .whl/*.whl >/dev/null 2>&1; then
  part wheels 120 bash -c "$PY -m pip install -q --no-index --no-deps --no-compile \
    --no-cache-dir --upgrade --target /tmp/site \$(ls .whl/*.whl | grep -v -e pykeops -e keopscore) \
    && $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site-keops .whl/pykeops-*.whl .whl/keopscore-*.whl"
  export PYTHONPATH="$PYTHONPATH:/tmp/site"
  KEOPS_SITE=/tmp/site-keops
fi
PYTHONPATH="$PYTHONPATH${KEOPS_SITE:+:$KEOPS_SITE}" $PY - <<'EOF'
import importlib.util
for name in ["pydantic", "pydantic_core", "pykeops", "keopscore", "geomloss", "flash_sinkhorn",
             "nibabel", "typer", "rich", "pyvista", "ot", "triton"]:
    print(f"{name}: {'yes' if importlib.util.find_spec(name) else 'MISSING'}")
EOF

part build 180 bash -c "$PY setup.py build_ext --inplace > '$OUT/build.log' 2>&1 \
  || { tail -40 '$OUT/build.log'; exit 1; }"
$PY -c "from otreg import native; print('compiled kernels:', native.info())"

if [ "$DEVICE" = cuda ]; then
  part tests 150 $PY -m pytest -q -x -p no:cacheprovider tests/test_gpu_path.py -k cuda -rs
else
  part tests 300 $PY -m pytest -q -x -p no:cacheprovider tests/test_gpu_path.py -m "not slow" \
    -k "not registration"
fi

if [ "$QUICK" = 1 ]; then
  SIZES="3000 10000"; PEERS="otreg geomloss-multiscale"; POINTS=2000
else
  SIZES="10000 100000 1000000"; PEERS="otreg geomloss-multiscale flash-multiscale"; POINTS=20000
fi
[ "$DEVICE" = cuda ] && [ "$QUICK" = 0 ] && PEERS="$PEERS flash-symmetric"
# shellcheck disable=SC2086
part solver 260 env PYTHONPATH="$PYTHONPATH${KEOPS_SITE:+:$KEOPS_SITE}" \
  $PY benchmarks/bench_solver.py --device "$DEVICE" --sizes $SIZES --kinds cube \
  --peers $PEERS --exact-up-to 0 --reference-up-to 100000 --repeats 3 \
  --geomloss-repeats-above 100000 1 --online-up-to 100000 --timeout 90 --threads "$(python3 -c 'import os; print(os.cpu_count())')"

part register 120 $PY benchmarks/bench_register_device.py --device "$DEVICE" --points "$POINTS" \
  --repeats 2
if [ "$DEVICE" = cuda ]; then
  part register-cpu 90 $PY benchmarks/bench_register_device.py --device cpu --points "$POINTS" \
    --repeats 0
fi

echo
echo "=== summary ($((SECONDS)) s in all)"
echo "| part | result | seconds |"
echo "|---|---|---|"
for row in "${SUMMARY[@]}"; do echo "$row"; done
