#!/usr/bin/env bash
# The GPU measurements issue #13 still needs (items 1 and 5), as one prepared run for a session that is lent
# an H100 or H200 through the device tool (15 minutes of device time in all). Prepare here, once:
#
#   echo /.whl/ >> .git/info/exclude; echo /.gpudata/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       -d .whl soundfile cffi pycparser pystoi
#   mkdir -p .gpudata && cp -r ../shared/data/fsdd/recordings .gpudata/fsdd   # 23 MB: the store is built there
#
# then run(command="bash benchmarks/gpu_session.sh", carry=[".whl", ".gpudata"], timeout_s=560) and give the
# machine back. Everything lands in $OUT/gpu.log (at most 8 files come back): the card, the train step's
# samples/s by variant (benchmarks/bench_training.py), and for digits one 40-epoch run per architecture with
# the defaults (`--precision auto --batch-size auto`: bf16, channels-last, data on the GPU, batch 256), with
# its epoch times and samples/s, then its test-take quality (`evaluate`, STOI included). Each step has its own
# time limit, so one that hangs cannot take the others' time.
set -uo pipefail
OUT=${OUT:-/tmp/gpu-session}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu.log") 2>&1
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, torchaudio; print('torch', torch.__version__, 'torchaudio', torchaudio.__version__)"

echo "== 1. the train step by variant (samples/s; #13 item 1)"
timeout 170 python3 -m benchmarks.bench_training --out "$OUT" || echo "bench_training: exit $?"

echo "== 2. digits, 40 epochs per architecture with the GPU defaults (#13 targets: >= 30,000 samples/s, epoch < 0.2 s)"
data=.gpudata/fsdd
[ -d "$data" ] || { echo "no $data: copy the FSDD recordings there first (see the top of this file)"; exit 1; }
timeout 120 python3 -m vae preprocess --input "$data" --output /tmp/gpu/digits --preset digits || exit 1
for arch in temporal default study; do
  start=$(date +%s.%N)
  timeout 100 python3 -m vae train --data /tmp/gpu/digits --output "/tmp/gpu/$arch" --arch "$arch" --epochs 40 \
    --device cuda --batch-size auto 2>/dev/null | grep -E "^epoch (1|2|10|20|40)/|stopped|error"
  echo "$arch: 40 epochs in $(echo "$(date +%s.%N) - $start" | bc) s wall, process start and latent statistics included"
  python3 - "$arch" <<'EOF'
import json, sys
arch = sys.argv[1]
events = [json.loads(line) for line in open(f"/tmp/gpu/{arch}/events.jsonl")]
epochs = [e for e in events if e.get("kind") == "epoch"]
meta = json.load(open(f"/tmp/gpu/{arch}/config.json"))["meta"]
if epochs:
    ends = [e["elapsed_s"] for e in epochs]  # wall time since the start at each epoch's end (validation included)
    times = sorted(b - a for a, b in zip(ends, ends[1:]))
    print(arch, {"samples_per_s_last": epochs[-1].get("samples_per_s"), "epochs": len(epochs),
                 "first_epoch_s": ends[0], "median_epoch_s": times[len(times) // 2] if times else None,
                 **{k: meta.get(k) for k in ("precision", "channels_last", "resident", "global_batch", "lr")}})
EOF
  timeout 60 python3 -m vae evaluate --checkpoint "/tmp/gpu/$arch" --input /tmp/gpu/digits --split test --device cuda \
    2>/dev/null | tail -1
done
echo "== done"
