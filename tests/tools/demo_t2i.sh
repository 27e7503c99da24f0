# examples/Makefile's text-to-image demo, shrunk: shapes with captions, a
# tokenizer trained on them and a tiny T5, a tiny F-Lite, a grid with one
# row per prompt; a second make does nothing, a new sampling setting only
# samples again.
t="$DIT_TMP"
fail() { echo "FAILED: $*" >&2; exit 1; }
args="-C $DIT_TESTS/../examples BIN=$DIT_BIN SHAPES=$DIT_EXAMPLES/make_shapes MAKE_T5=$DIT_EXAMPLES/make_t5"
args="$args OUT=$t/demo PER_CLASS=6 T2I_STEPS=10 T2I_DEPTH=1 T2I_WIDTH=32 T2I_TRAIN=--train-batch-size=4"
args="$args T2I_SAMPLE=--num-images-per-prompt=2"
make -s $args demo-t2i >"$t/log" 2>&1 || fail "demo-t2i: $(tail -n 20 "$t/log")"
[ -s "$t/demo-t2i/grid.png" ] || fail "no grid"
[ "$(ls "$t/demo-t2i/samples" | wc -l)" = 8 ] || fail "samples: $(ls "$t/demo-t2i/samples")"
grep -q 'demo-t2i grid:' "$t/log" || fail "the grid's path is not printed"
grep -aq 'at the top left' "$t/demo-t2i/samples/000000.png" || fail "no prompt in the PNG"
grep -q 'at the\|on the\|in the middle' "$t/demo-t2i/captions.txt" || fail "captions without positions"
[ -s "$t/demo-t2i/t5/tokenizer/spiece.model" ] && [ -s "$t/demo-t2i/t5/text_encoder/model.safetensors" ] ||
    fail "no tokenizer or T5"
make -s $args demo-t2i >"$t/log2" 2>&1 || fail "second make"
grep -q 'dit-train\|dit-precompute\|make_t5' "$t/log2" && fail "a second make redid a stage: $(cat "$t/log2")"
make -s $args T2I_SAMPLE=--num-images-per-prompt=1 -W "$t/demo-t2i/run/checkpoint-0000010" demo-t2i \
    >"$t/log3" 2>&1 || fail "resample"
grep -q 'dit-train' "$t/log3" && fail "a new sampling setting retrained"
echo "demo-t2i: all checks passed"
