#!/bin/bash
# The GPU session's command: from the repository root on the lent machine,
#   bash bench/gpu/run_device.sh [GROUP|STAGE]...
# with the device call carrying [".deps/pack"] (bench/gpu/README.md). It sets
# up the Debian libraries from .deps, builds with nvcc, runs the CUDA parity
# tests (plain and under compute-sanitizer), then the benchmarks: ours
# (bench_ours below) and PyTorch's (dit_train_torch.py, dit_sample_torch.py),
# eager and compiled. Every log and JSON lands in $OUT as at most four files
# (summary.txt, results.json, env.txt, logs.tar.gz), rewritten after each
# stage, so a run cut short still returns what it did.
#
# One device command may run 10 minutes, so stages share a deadline
# (BUDGET_S, default 560 s from the start): each runs under `timeout` capped
# by what is left, a stage that no longer fits is skipped and named in the
# closing "rerun with" line. A failed stage does not stop the next.
#
# Groups: all (default), cuda (build, tests, sanitizer, ours), torch (the four
# PyTorch runs), tests (build, test-cuda, sanitizer), bench (build, ours,
# torch). Stages: build test-cuda sanitizer ours torch-train torch-sample
# torch-train-compile torch-sample-compile. env and deps always run first.
#
# Knobs (environment): OUT, BUDGET_S, JOBS, PYTHON, MODEL (XL/2),
# TRAIN_BATCH (256, halved on OOM), TRAIN_STEPS (20), SAMPLE_IMAGES (32),
# SAMPLE_STEPS (250), COMPILE_SCOPE (step, or blocks: a shorter compile),
# SAN_K (test name substrings run under memcheck), MAKE_EXTRA (more make
# arguments, e.g. OBJDIR=... BINDIR=...), BENCH_SMOKE=1 (no GPU: run the
# benchmark stages on the CPU with tiny models, to test this script).
set -u

cd "$(dirname "$0")/../.." || exit 1
SELF=bench/gpu/run_device.sh
OUT=${OUT:-$PWD/build/device-out}
WORK=${BENCH_WORK:-$PWD/build/device-work}
BUDGET_S=${BUDGET_S:-560}
RESERVE_S=15                      # kept for packing the results at the end
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 4)}
PYTHON=${PYTHON:-python3}
MODEL=${MODEL:-XL/2}
MODEL=${MODEL#DiT-}
TRAIN_BATCH=${TRAIN_BATCH:-256}
TRAIN_STEPS=${TRAIN_STEPS:-20}
SAMPLE_IMAGES=${SAMPLE_IMAGES:-32}
SAMPLE_STEPS=${SAMPLE_STEPS:-250}
COMPILE_SCOPE=${COMPILE_SCOPE:-step}
SAN_K=${SAN_K:-test_cuda_ops test_cuda_attention test_cuda_matmul}
BENCH_SMOKE=${BENCH_SMOKE:-0}
ALL_STAGES="build test-cuda sanitizer ours torch-train torch-sample torch-train-compile torch-sample-compile"

# ---------------------------------------------------------------- helpers
now() { date +%s; }
say() { echo "[run_device $(date +%H:%M:%S)] $*"; }

make_vars() {
    # CC carries -L into .deps/root (LIBRARY_PATH alone loses to the host's
    # /usr/lib for a library the host also has); -Wno-error when the strict
    # build failed on this compiler (see the build stage).
    local v=(-j"$JOBS")
    [ -n "${DIT_DEPS_CC:-}" ] && v+=("CC=$DIT_DEPS_CC")
    [ -f "$WORK/.no_werror" ] && v+=("CFLAGS=-O2 -g -Wno-error")
    # MAKE_EXTRA: more make arguments, e.g. "OBJDIR=build/x BINDIR=build/x/bin"
    local -a extra
    read -r -a extra <<< "${MAKE_EXTRA:-}"
    v+=("${extra[@]}")
    printf '%s\n' "${v[@]}"
}

make_value() {  # the value of one Makefile variable under these arguments
    local -a v
    mapfile -t v < <(make_vars)
    make -s --no-print-directory "${v[@]:1}" --eval "print-value: ; @echo \$($1)" print-value 2>/dev/null
}

run_make() {
    local -a v
    mapfile -t v < <(make_vars)
    echo "+ make ${v[*]} $*"
    make "${v[@]}" "$@"
}

# Python must not see .deps/root: its Debian zlib/lzma would shadow the host's.
py() { env LD_LIBRARY_PATH="${ORIG_LD_LIBRARY_PATH:-}" PYTHONUNBUFFERED=1 "$PYTHON" "$@"; }

json_field() {  # FILE FIELD: one top-level field of a JSON file, or empty
    py -c 'import json,sys
try: v = json.load(open(sys.argv[1])).get(sys.argv[2])
except Exception: v = None
print("" if v is None else v)' "$1" "$2" 2>/dev/null
}

gpu_state() {  # clocks and power: throttling shows here
    timeout 20 nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,power.draw,power.limit,temperature.gpu,memory.used,memory.total,utilization.gpu \
        --format=csv 2>&1 || echo "nvidia-smi: not available"
}

# ---------------------------------------------------------------- stages
# Each stage body runs in a child (`run_device.sh __stage NAME`) under
# timeout, which kills the whole process group when time is up.

stage_build() {
    if run_make all; then :; else
        echo "=== the strict build failed; retrying with -Wno-error (host compiler: $(cc --version | head -1))"
        touch "$WORK/.no_werror"
        run_make all || return 1
    fi
    # the CUDA test runner and the bench programs (dit_gpu) come with it
    if grep -q '^test-cuda:' Makefile; then
        run_make "$(make_value CUDA_TEST_BIN)" || true
    fi
    run_make bench || true
}

stage_test_cuda() {
    run_make test-cuda
}

stage_sanitizer() {
    command -v compute-sanitizer >/dev/null || ls "${CUDA_HOME:-/usr/local/cuda}"/bin/compute-sanitizer >/dev/null 2>&1 ||
        echo "compute-sanitizer not on PATH; the Makefile looks in CUDA_HOME/bin"
    local k rc=0
    for k in $SAN_K; do
        echo "=== compute-sanitizer memcheck, tests matching '$k'"
        run_make test-cuda CUDA_SANITIZER=1 K="$k" || rc=1
    done
    return $rc
}

# ======================= OUR SIDE: the lead adjusts this =======================
# Runs our CUDA backend's benchmark modes and writes ours_train.json and
# ours_sample.json (one JSON object each, the same fields as the PyTorch
# scripts: images_per_s, ms_per_step, mfu, peak_mem_bytes, flops_per_image).
# Today: bench/dit_gpu (bench/dit_gpu.c, built by `make bench`); otherwise
# dit-train/dit-sample if their --help shows a --benchmark mode; otherwise
# "not available".
bench_ours() {
    local objdir bin b rc
    objdir=$(make_value OBJDIR)
    bin=${objdir:-build/release}/bench/dit_gpu
    if [ -f bench/dit_gpu.c ] && [ ! -x "$bin" ]; then run_make "$bin" || true; fi
    if [ -x "$bin" ]; then
        local dev=cuda extra=()
        [ "$HAVE_GPU" = 1 ] || { dev=cpu; extra=(--depth 1 --latent 8); }
        rc=1
        for b in $TRAIN_BATCH $((TRAIN_BATCH / 2)) $((TRAIN_BATCH / 4)); do
            [ "$HAVE_GPU" = 1 ] || b=2
            echo "=== ours: train $MODEL batch $b"
            if "$bin" --mode train --model "DiT-$MODEL" --batch "$b" --steps "$TRAIN_STEPS" --warmup 3 \
                   --device "$dev" "${extra[@]}" > "$WORK/ours_train.json" 2> "$WORK/ours_train.err"; then
                rc=0; cat "$WORK/ours_train.err"; break
            fi
            cat "$WORK/ours_train.err"
            grep -q -i 'memory' "$WORK/ours_train.err" || break   # retry smaller only on OOM
        done
        local n=$SAMPLE_IMAGES s=$SAMPLE_STEPS
        [ "$HAVE_GPU" = 1 ] || { n=1; s=3; }
        echo "=== ours: sample $MODEL, $n images x $s steps"
        "$bin" --mode sample --model "DiT-$MODEL" --batch "$n" --steps 1 --warmup 1 \
            --sample-steps "$s" --device "$dev" "${extra[@]}" > "$WORK/ours_sample.json" || rc=1
        cat "$WORK/ours_train.json" "$WORK/ours_sample.json" 2>/dev/null
        return $rc
    fi
    local bindir
    bindir=$(make_value BINDIR)
    if [ -x "$bindir/dit-train" ] && "$bindir/dit-train" --help 2>&1 | grep -q -- '--benchmark'; then
        echo "bin/dit-train has --benchmark: wire its flags in here"
        return 1
    fi
    echo "ours: not available (no bench/dit_gpu.c and no --benchmark mode in bin/dit-train)"
    return 0
}
# ===============================================================================

stage_ours() { bench_ours; }

torch_common() {  # sets the array COMMON
    if [ "$HAVE_GPU" = 1 ]; then
        COMMON=(--device cuda --model "$MODEL")
    else  # BENCH_SMOKE: the plumbing on the CPU
        COMMON=(--device cpu --model S/2 --depth 2 --hidden 64 --heads 4 --image-size 64)
    fi
}

torch_train() {  # NAME [extra flags]
    local name=$1 batch=$TRAIN_BATCH steps=$TRAIN_STEPS warm=5
    shift
    # the compiled run starts from the batch that fitted eagerly: an OOM
    # there costs a whole recompilation
    local fitted
    fitted=$(json_field "$WORK/torch_train_eager.json" batch)
    [ -n "$fitted" ] && [ "$name" != eager ] && batch=$fitted
    [ "$HAVE_GPU" = 1 ] || { batch=4; steps=2; warm=1; }
    torch_common
    py bench/gpu/dit_train_torch.py "${COMMON[@]}" --batch "$batch" --steps "$steps" \
        --warmup "$warm" --label "torch train $name" "$@" > "$WORK/torch_train_$name.json"
}

torch_sample() {  # NAME [extra flags]
    local name=$1 n=$SAMPLE_IMAGES s=$SAMPLE_STEPS
    shift
    [ "$HAVE_GPU" = 1 ] || { n=2; s=4; }
    torch_common
    py bench/gpu/dit_sample_torch.py "${COMMON[@]}" --images "$n" --sampling-steps "$s" \
        --warmup 3 --repeats 1 --label "torch sample $name" "$@" > "$WORK/torch_sample_$name.json"
}

stage_torch_train() { torch_train eager; }
stage_torch_sample() { torch_sample eager; }
stage_torch_train_compile() { torch_train compile --compile --compile-scope "$COMPILE_SCOPE"; }
stage_torch_sample_compile() { torch_sample compile --compile --compile-scope "$COMPILE_SCOPE"; }

# stage: cap in seconds, least worth starting, whether it needs a GPU
stage_cap() {
    case $1 in
    build) echo "300 60 0" ;;
    test-cuda) echo "240 30 1" ;;
    sanitizer) echo "240 45 1" ;;
    ours) echo "240 45 1" ;;
    torch-train) echo "150 45 1" ;;
    torch-sample) echo "150 40 1" ;;
    torch-train-compile) echo "300 120 1" ;;
    torch-sample-compile) echo "240 90 1" ;;
    esac
}

# ---------------------------------------------------------------- results
pack() {
    mkdir -p "$OUT"
    py - "$WORK" "$OUT" <<'EOF' 2>>"$WORK/pack.err" || cp "$WORK/stages.tsv" "$OUT/summary.txt"
import glob, json, os, sys
work, out = sys.argv[1], sys.argv[2]
stages = [l.rstrip("\n").split("\t") for l in open(os.path.join(work, "stages.tsv"))]
res = {"stages": [dict(zip(["stage", "status", "seconds"], s)) for s in stages]}
for f in sorted(glob.glob(os.path.join(work, "*.json"))):
    try:
        res[os.path.basename(f)[:-5]] = json.load(open(f))
    except Exception as e:
        res[os.path.basename(f)[:-5]] = {"unreadable": str(e)}
tmp = os.path.join(out, "results.json.tmp")
json.dump(res, open(tmp, "w"), indent=1)
os.replace(tmp, os.path.join(out, "results.json"))

lines = ["stage                  status                  seconds"]
lines += [f"{s[0]:<22} {s[1]:<23} {s[2]:>7}" for s in stages]
rows = [("ours train", "ours_train"), ("torch train eager", "torch_train_eager"),
        ("torch train compile", "torch_train_compile"), ("ours sample", "ours_sample"),
        ("torch sample eager", "torch_sample_eager"),
        ("torch sample compile", "torch_sample_compile")]
import re
for name in ("build", "test-cuda", "sanitizer", "ours"):
    log = os.path.join(work, name + ".log")
    if not os.path.exists(log):
        continue
    keep = [l.strip() for l in open(log, errors="replace")
            if re.search(r"\d+ passed, \d+ failed|ERROR SUMMARY|^FAIL|rror:|not available", l)]
    if keep:
        lines += ["", f"{name}:"] + ["  " + l[:160] for l in keep[:12]]
        if len(keep) > 12:
            lines.append(f"  ... {len(keep) - 12} more lines like these in logs.tar.gz")
lines += ["", f"{'benchmark':<22} {'batch':>6} {'images/s':>10} {'ms/step':>10} {'TFLOP/s':>8} "
          f"{'MFU':>6} {'peak GiB':>9}"]
def num(v, fmt):
    width = int(fmt.split(".")[0].rstrip("df"))
    return format(v, fmt) if isinstance(v, (int, float)) else "-".rjust(width)
for label, key in rows:
    d = res.get(key)
    if not isinstance(d, dict) or "images_per_s" not in d:
        lines.append(f"{label:<22} {'not run':>6}")
        continue
    batch = d.get("batch", d.get("images"))
    tflops = d.get("tflops_per_s", d.get("tflops"))
    ms = d.get("ms_per_step")
    if key.endswith("sample") or "sample_" in key:
        ms = d.get("ms_per_loop", ms)  # a whole sampling loop, both sides
    mem = d.get("peak_mem_bytes")
    lines.append(f"{label:<22} {num(batch, '6d')} {num(d['images_per_s'], '10.2f')} "
                 f"{num(ms, '10.1f')} {num(tflops, '8.1f')} {num(d.get('mfu'), '6.3f')} "
                 f"{num(mem / 2**30 if mem else None, '9.1f')}")
lines.append("(train ms/step: one optimizer step; sample ms/step: one whole "
             "sampling loop of the batch)")
gemm = res.get("torch_train_eager", {}).get("gemm_bf16_tflops")
if gemm:
    lines.append(f"measured bf16 8192^3 matmul: {gemm:.0f} TFLOP/s")
open(os.path.join(out, "summary.txt"), "w").write("\n".join(lines) + "\n")
EOF
    [ -f "$WORK/env.txt" ] && cp "$WORK/env.txt" "$OUT/env.txt"
    tar -C "$WORK" -czf "$OUT/logs.tar.gz.tmp" --exclude='*.tmp' . 2>/dev/null &&
        mv "$OUT/logs.tar.gz.tmp" "$OUT/logs.tar.gz"
}

record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >> "$WORK/stages.tsv"; }

run_stage() {
    local name=$1 cap least needs_gpu left t rc start
    read -r cap least needs_gpu <<< "$(stage_cap "$name")"
    if [ "$needs_gpu" = 1 ] && [ "$HAVE_GPU" != 1 ] && { [ "$BENCH_SMOKE" != 1 ] || [[ $name != torch-* && $name != ours ]]; }; then
        say "$name: skipped (no GPU)"
        record "$name" "skipped (no GPU)" 0
        pack
        return
    fi
    left=$((DEADLINE - $(now) - RESERVE_S))
    t=$((left < cap ? left : cap))
    if [ "$t" -lt "$least" ]; then
        say "$name: skipped (out of time: ${left}s left)"
        record "$name" "skipped (out of time)" 0
        SKIPPED="$SKIPPED $name"
        pack
        return
    fi
    say "$name: start (limit ${t}s)"
    start=$(now)
    timeout -k 10 "$t" bash "$SELF" __stage "$name" > "$WORK/$name.log" 2>&1
    rc=$?
    local secs=$(($(now) - start)) status=ok
    if [ $rc = 124 ] || [ $rc = 137 ]; then status="timeout (${t}s)"; SKIPPED="$SKIPPED $name"
    elif [ $rc != 0 ]; then status="failed (rc $rc)"; fi
    say "$name: $status after ${secs}s; last lines:"
    tail -n 6 "$WORK/$name.log" | cut -c1-200 | sed "s/^/    /"
    record "$name" "$status" "$secs"
    pack
}

# ---------------------------------------------------------------- env, deps
env_report() {
    echo "== date: $(date -u '+%Y-%m-%dT%H:%M:%SZ')"
    echo "== git: $(git rev-parse HEAD 2>/dev/null || echo '(no git)') $(git status --short 2>/dev/null | wc -l) changed files"
    echo "== nproc: $(nproc)"
    echo "== uname: $(uname -a)"
    echo "== /etc/os-release"; cat /etc/os-release 2>&1
    echo "== memory"; free -g 2>&1
    echo "== disk"; df -h . 2>&1
    echo "== nvidia-smi"
    if command -v nvidia-smi >/dev/null; then
        timeout 30 nvidia-smi 2>&1
        echo "== GPU state before"; gpu_state
    else
        echo "nvidia-smi: not found"
    fi
    echo "== nvcc"; { command -v nvcc && nvcc --version; } 2>&1 ||
        { ls /usr/local/cuda/bin/nvcc 2>&1 && /usr/local/cuda/bin/nvcc --version; } 2>&1
    echo "== compute-sanitizer"; { compute-sanitizer --version || /usr/local/cuda/bin/compute-sanitizer --version; } 2>&1 | tail -3
    echo "== cc"; cc --version 2>&1 | head -1
    echo "== tools"; for t in make pkg-config dpkg-deb xz tar python3 timeout; do
        printf '%s: %s\n' "$t" "$(command -v $t || echo missing)"; done
    echo "== python"; timeout 60 env LD_LIBRARY_PATH="${ORIG_LD_LIBRARY_PATH:-}" "$PYTHON" -c '
import sys, torch
print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda,
      "available", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(p.name, p.multi_processor_count, "SMs", p.total_memory // 2**20, "MiB")' 2>&1
}

setup_deps() {
    if [ ! -d .deps/root/usr ]; then
        if [ -f .deps/pack/deps-root.tar.xz ] || compgen -G ".deps/debs/*.deb" >/dev/null; then
            timeout 120 bash bench/gpu/prepare_deps.sh unpack 2>&1 || return 1
        else
            echo "no .deps (carry .deps/pack): building against the host's own libraries"
            return 0
        fi
    fi
    local e
    e=$(bash bench/gpu/prepare_deps.sh env) || return 1
    eval "$e"
    echo "$e"
}

# ---------------------------------------------------------------- main
if [ "${1:-}" = __stage ]; then
    HAVE_GPU=$(cat "$WORK/.have_gpu" 2>/dev/null || echo 0)
    f=stage_${2//-/_}
    "$f"
    exit $?
fi

START=$(now)
DEADLINE=$((START + BUDGET_S))
SKIPPED=""
export ORIG_LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}
mkdir -p "$OUT" "$WORK"
rm -f "$WORK"/*.json "$WORK"/*.log "$WORK"/*.err "$WORK/stages.tsv" "$WORK/.no_werror"
: > "$WORK/stages.tsv"

stages=""
for a in "${@:-all}"; do
    case $a in
    all) stages="$stages $ALL_STAGES" ;;
    cuda) stages="$stages build test-cuda sanitizer ours" ;;
    tests) stages="$stages build test-cuda sanitizer" ;;
    torch) stages="$stages torch-train torch-sample torch-train-compile torch-sample-compile" ;;
    bench) stages="$stages build ours torch-train torch-sample torch-train-compile torch-sample-compile" ;;
    env|deps) ;;
    *) if [ -n "$(stage_cap "$a")" ]; then stages="$stages $a"
       else echo "run_device: unknown stage '$a' (stages: $ALL_STAGES)" >&2; exit 2; fi ;;
    esac
done

say "env"
env_report > "$WORK/env.txt" 2>&1
HAVE_GPU=0
if timeout 20 nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then HAVE_GPU=1
elif grep -q 'available True' "$WORK/env.txt"; then HAVE_GPU=1; fi
echo "$HAVE_GPU" > "$WORK/.have_gpu"
export HAVE_GPU
grep -E '^(== nproc|PRETTY_NAME|NVIDIA|\| +[0-9]+ +NVIDIA|[0-9.]+ torch)' "$WORK/env.txt" | sed 's/^/    /'
if [ "$HAVE_GPU" != 1 ]; then
    if [ "$BENCH_SMOKE" = 1 ]; then say "no GPU visible: BENCH_SMOKE=1, the benchmarks run tiny models on the CPU"
    else say "no GPU visible: the GPU stages are skipped"; fi
fi
record env ok $(($(now) - START))

say "deps"
t0=$(now)
if setup_deps > "$WORK/deps.log" 2>&1; then record deps ok $(($(now) - t0))
else record deps "failed" $(($(now) - t0)); fi
tail -n 3 "$WORK/deps.log" | sed 's/^/    /'
pack

seen=" "
for s in $stages; do
    case $seen in *" $s "*) continue ;; esac
    seen="$seen$s "
    run_stage "$s"
done

[ "$HAVE_GPU" = 1 ] && { echo "== GPU state after"; gpu_state; } >> "$WORK/env.txt" 2>&1
pack
echo
cat "$OUT/summary.txt"
echo
echo "results in $OUT: $(cd "$OUT" && ls | tr '\n' ' ')"
if [ -n "$SKIPPED" ]; then
    echo "rerun with: bash $SELF$SKIPPED"
fi
echo "total $(($(now) - START))s of ${BUDGET_S}s"
