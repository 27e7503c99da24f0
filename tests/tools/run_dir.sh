# One run, one output directory: a second dit-train on a directory in use
# is refused while the first runs on to the same bits as a run alone; a
# fresh run into a used directory is refused and changes nothing, and
# --overwrite-output-dir leaves exactly the new run; kill -9 leaves no
# stale lock; a resume with settings that break an exact resume is refused
# naming each, one with a new learning rate is logged; dit-sample does not
# write over another invocation's images; two dit-precompute runs into one
# shard set at once end in the set one run makes.
bin="$DIT_BIN"
img="$DIT_TESTS/fixtures/images"
t="$DIT_TMP"
fail() { echo "FAILED: $*" >&2; exit 1; }
tree() { (cd "$1" && find . -type f ! -name dit-train.lock | LC_ALL=C sort | xargs sha256sum); }

"$bin/dit-index" --class-from-dir "$img/classes" 2>/dev/null | "$bin/dit-bucket" --center-crop-size 32 2>/dev/null \
    >"$t/train.tsv" || fail "index"
"$bin/dit-precompute" -o "$t/data" "$t/train.tsv" 2>/dev/null || fail "precompute"
small="--model DiT-S/4 --depth 2 --hidden-size 64 --num-heads 4 --train-batch-size 4 --learning-rate 1e-3
       --threads 2 --log-every 10 --ckpt-every 20"
train() { "$bin/dit-train" --data-path "$t/data" $small "$@"; }
same() { # the final checkpoints are identical, file by file
    for f in transformer/diffusion_pytorch_model.safetensors ema/diffusion_pytorch_model.safetensors \
             training_state.safetensors; do
        cmp -s "$1/$f" "$2/$f" || fail "$f differs between $1 and $2"
    done
}

train --max-steps 60 --output-dir "$t/alone" 2>/dev/null || fail "a run alone"

# A second process on a directory in use: refused at once, naming the PID,
# while the first goes on; the first ends as a run alone does.
(exec "$bin/dit-train" --data-path "$t/data" $small --max-steps 60 --output-dir "$t/a") 2>/dev/null &
pid=$!
while kill -0 "$pid" 2>/dev/null && [ "$(cat "$t/a/dit-train.lock" 2>/dev/null)" != "$pid" ]; do :; done
rc=0; train --max-steps 60 --output-dir "$t/a" 2>"$t/err" || rc=$?
kill -0 "$pid" 2>/dev/null || fail "the first run ended before the second was tried"
[ "$rc" = 1 ] && grep -q "in use by another dit-train (PID $pid" "$t/err" || fail "a second run: exit $rc, $(cat "$t/err")"
wait "$pid" || fail "the first run failed"
same "$t/alone/checkpoint-0000060" "$t/a/checkpoint-0000060"

# A fresh run into a used directory: refused, nothing changed.
tree "$t/a" >"$t/before"
rc=0; train --max-steps 20 --seed 5 --output-dir "$t/a" 2>"$t/err" || rc=$?
[ "$rc" = 1 ] && grep -q 'holds another run (checkpoints up to step 60 and metrics.jsonl of 6 lines)' "$t/err" &&
    grep -q -- '--overwrite-output-dir' "$t/err" || fail "a fresh run into a used directory: exit $rc, $(cat "$t/err")"
tree "$t/a" | cmp -s - "$t/before" || fail "a refused run changed the directory"

# --overwrite-output-dir: exactly the new run is left.
train --max-steps 20 --output-dir "$t/fresh" 2>/dev/null || fail "a fresh run of 20 steps"
train --max-steps 20 --output-dir "$t/a" --overwrite-output-dir 2>"$t/err" || fail "overwrite: $(cat "$t/err")"
grep -q 'is replaced' "$t/err" || fail "no replacement line: $(cat "$t/err")"
[ "$(cd "$t/a" && ls)" = "$(cd "$t/fresh" && ls)" ] || fail "overwritten directory holds $(ls "$t/a"), a fresh run $(ls "$t/fresh")"
same "$t/fresh/checkpoint-0000020" "$t/a/checkpoint-0000020"
ls -d "$t"/a.new-* >/dev/null 2>&1 && fail "the old run was left beside: $(ls -d "$t"/a.new-*)"

# kill -9, then --resume latest starts at once and ends bitwise.
(exec "$bin/dit-train" --data-path "$t/data" $small --max-steps 60 --output-dir "$t/k") 2>/dev/null &
pid=$!
while kill -0 "$pid" 2>/dev/null && [ ! -d "$t/k/checkpoint-0000020" ]; do :; done
kill -9 "$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
train --max-steps 60 --output-dir "$t/k" --resume latest 2>"$t/err" || fail "resume after kill -9: $(cat "$t/err")"
same "$t/alone/checkpoint-0000060" "$t/k/checkpoint-0000060"

# A resume that would not continue the run exactly: each difference named.
rc=0; train --max-steps 80 --output-dir "$t/k" --resume latest --seed 3 --train-batch-size 2 2>"$t/err" || rc=$?
[ "$rc" = 1 ] && grep -q 'seed: the checkpoint.s 0, this run.s 3 (--seed)' "$t/err" &&
    grep -q 'batch: the checkpoint.s 4, this run.s 2 (--train-batch-size)' "$t/err" ||
    fail "a resume with another seed and batch: exit $rc, $(cat "$t/err")"
# what may change on purpose is logged
train --max-steps 70 --output-dir "$t/k" --resume latest --learning-rate 5e-4 2>"$t/err" ||
    fail "a resume with a new learning rate: $(cat "$t/err")"
grep -q 'resuming with learning_rate 0.0005 (the checkpoint.s run had 0.001)' "$t/err" || fail "$(cat "$t/err")"
rc=0; train --max-steps 70 --output-dir "$t/k" --resume latest --overwrite-output-dir 2>"$t/err" || rc=$?
[ "$rc" = 2 ] || fail "--resume with --overwrite-output-dir: exit $rc"

# dit-sample: another invocation's images are not written over.
ck="$t/alone/checkpoint-0000060"
"$bin/dit-sample" --model-path "$ck" --class-labels 1,2 --num-inference-steps 2 --threads 2 -o "$t/s" 2>/dev/null ||
    fail "dit-sample"
tree "$t/s" >"$t/before"
rc=0; "$bin/dit-sample" --model-path "$ck" --class-labels 1,2 --num-inference-steps 3 --threads 2 -o "$t/s" \
    2>"$t/err" || rc=$?
[ "$rc" = 1 ] && grep -q '000000-class1.png exists' "$t/err" || fail "dit-sample over its images: exit $rc, $(cat "$t/err")"
tree "$t/s" | cmp -s - "$t/before" || fail "a refused dit-sample changed the images"
"$bin/dit-sample" --model-path "$ck" --class-labels 1,2 --num-inference-steps 3 --threads 2 -o "$t/s" --overwrite \
    2>/dev/null || fail "dit-sample --overwrite"
tree "$t/s" | cmp -s - "$t/before" && fail "--overwrite wrote nothing new"

# dit-precompute: two runs into one shard set at once end in one run's set.
"$bin/dit-precompute" -o "$t/p1" "$t/train.tsv" 2>/dev/null &
p1=$!
"$bin/dit-precompute" -o "$t/p1" "$t/train.tsv" 2>/dev/null &
p2=$!
wait "$p1" || fail "the first of two concurrent dit-precompute runs failed"
wait "$p2" || fail "the second of two concurrent dit-precompute runs failed"
"$bin/dit-inspect" --verify "$t/p1" >/dev/null || fail "two concurrent dit-precompute runs: the set does not verify"
cmp -s "$t/p1/manifest.tsv" "$t/data/manifest.tsv" || fail "two concurrent runs' manifest differs from one run's"
tree "$t/p1" >"$t/p1.tree"
tree "$t/data" | cmp -s - "$t/p1.tree" || fail "two concurrent runs' shards differ from one run's"
exit 0
