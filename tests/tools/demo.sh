# examples/Makefile, shrunk: every stage runs once, a second make does
# nothing, and a change of the sampling settings redoes only the sampling.
t="$DIT_TMP"
fail() { echo "FAILED: $*" >&2; exit 1; }
args="-C $DIT_TESTS/../examples BIN=$DIT_BIN SHAPES=$DIT_EXAMPLES/make_shapes OUT=$t/demo PER_CLASS=6 STEPS=10"
args="$args MODEL=--model=DiT-S/4 TRAIN=--depth=1 SAMPLE=--num-per-class=2"
make -s $args >"$t/log" 2>&1 || fail "demo: $(tail -n 20 "$t/log")"
[ -s "$t/demo/grid.png" ] || fail "no grid"
[ "$(ls "$t/demo/samples" | wc -l)" = 8 ] || fail "samples: $(ls "$t/demo/samples")"
grep -q 'demo grid:' "$t/log" || fail "the grid's path is not printed"
make -s $args >"$t/log2" 2>&1 || fail "second make"
grep -q 'dit-train\|dit-precompute\|dit-index' "$t/log2" && fail "a second make redid a stage: $(cat "$t/log2")"
make -s $args SAMPLE=--num-per-class=1 -W "$t/demo/run/checkpoint-0000010" >"$t/log3" 2>&1 || fail "resample"
grep -q 'dit-train' "$t/log3" && fail "a new sampling setting retrained"
echo "demo: all checks passed"
