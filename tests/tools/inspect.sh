# dit-inspect on the committed fixtures: summaries, --stats, --json, --verify,
# bad input, and the common options. Runs under sh -eu with DIT_BIN, DIT_TESTS
# and DIT_TMP set by the test runner.
inspect="$DIT_BIN/dit-inspect"
fx="$DIT_TESTS/fixtures/safetensors"
t="$DIT_TMP"
fail() { echo "FAILED: $*" >&2; exit 1; }

# Common options and usage errors.
"$inspect" --help | grep -q -- '--stats' || fail "--help lacks --stats"
"$inspect" --version | grep -q '^dit-inspect [0-9]' || fail "--version"
rc=0; "$inspect" 2>"$t/err" || rc=$?
[ "$rc" = 2 ] || fail "no FILE: exit $rc, want 2"
grep -q 'no FILE given' "$t/err" || fail "no FILE message"
rc=0; "$inspect" --no-such-option x 2>"$t/err" || rc=$?
[ "$rc" = 2 ] || fail "unknown option: exit $rc"
grep -q "unknown option '--no-such-option'" "$t/err" || fail "unknown option message"
rc=0; "$inspect" --device tpu x 2>/dev/null || rc=$?
[ "$rc" = 2 ] || fail "--device tpu: exit $rc"
if ! command -v nvidia-smi >/dev/null 2>&1; then
    rc=0; "$inspect" --device cuda "$fx/python_fixture.safetensors" >/dev/null 2>"$t/err" || rc=$?
    [ "$rc" = 1 ] || fail "--device cuda without a GPU: exit $rc"
    grep -q 'cuda' "$t/err" || fail "--device cuda message"
    "$inspect" --device auto "$fx/python_fixture.safetensors" 2>"$t/err" >/dev/null
    grep -q 'device: cpu (auto' "$t/err" || fail "--device auto does not say which device"
fi

# The file written by the Python safetensors package.
"$inspect" --device=cpu "$fx/python_fixture.safetensors" >"$t/out"
grep -q 'safetensors, ' "$t/out" || fail "no summary line"
tail -n +2 "$fx/python_fixture.expected.tsv" | while IFS="$(printf '\t')" read -r name dtype shape rest; do
    grep -q "^ *$name  *$dtype " "$t/out" || fail "tensor $name $dtype missing from the summary"
done
"$inspect" --stats "$fx/python_fixture.safetensors" | grep -q ' mean ' || fail "--stats header"
"$inspect" --json "$fx/python_fixture.safetensors" >"$t/json"
grep -q '"kind":"safetensors"' "$t/json" || fail "--json kind"
[ "$(wc -l <"$t/json")" = 1 ] || fail "--json is not one line per file"
"$inspect" --verify "$fx/python_fixture.safetensors" | grep -q ': OK$' || fail "--verify OK"

# The sharded form through its index.
"$inspect" "$fx/sharded/model.safetensors.index.json" >"$t/out"
grep -q 'safetensors-index' "$t/out" || fail "index summary"
"$inspect" --verify "$fx/sharded/model.safetensors.index.json" >/dev/null || fail "index verify"

# Every malformed file: exit 1 and a message naming the file.
n=0
for f in "$fx"/bad/*.safetensors; do
    n=$((n + 1))
    rc=0; "$inspect" "$f" >/dev/null 2>"$t/err" || rc=$?
    [ "$rc" = 1 ] || fail "$f: exit $rc, want 1"
    grep -q "$(basename "$f")" "$t/err" || fail "$f: message does not name the file: $(cat "$t/err")"
    rc=0; "$inspect" --verify "$f" >"$t/out" 2>/dev/null || rc=$?
    [ "$rc" = 1 ] || fail "$f --verify: exit $rc"
    grep -q 'FAILED' "$t/out" || fail "$f --verify verdict"
done
[ "$n" -ge 10 ] || fail "only $n malformed fixtures"

# Manifests, from a file and from standard input; a bad one under --verify.
printf 'key\tcaption\tbucket\na\tone\\tcap\t256x256\nb\t\t256x256\nc\tthree\t512x256\n' >"$t/m.tsv"
"$inspect" "$t/m.tsv" >"$t/out"
grep -q 'manifest, 3 records, 3 columns' "$t/out" || fail "manifest summary: $(cat "$t/out")"
grep -q '^  caption  *2$' "$t/out" || fail "caption value count"
grep -q '256x256  *2 records' "$t/out" || fail "bucket counts"
"$inspect" - <"$t/m.tsv" | grep -q '3 records' || fail "manifest on stdin"
"$inspect" --verify "$t/m.tsv" | grep -q 'm.tsv: OK' || fail "manifest verify"
printf 'key\tcaption\na\tx\na\ty\nb\n' >"$t/bad.tsv"
rc=0; "$inspect" --verify "$t/bad.tsv" >"$t/out" 2>"$t/err" || rc=$?
[ "$rc" = 1 ] || fail "bad manifest verify: exit $rc"
grep -q 'bad.tsv:3: duplicate key' "$t/err" || fail "duplicate key not reported"
grep -q 'bad.tsv:4: 1 field' "$t/err" || fail "short record not reported"
grep -q 'FAILED (2 problems)' "$t/out" || fail "verdict: $(cat "$t/out")"

# A model directory: config.json plus weights in a subdirectory.
mkdir -p "$t/model/transformer"
printf '{"_class_name": "DiTTransformer2DModel", "num_layers": 2}\n' >"$t/model/transformer/config.json"
printf '{"_class_name": "DiTPipeline"}\n' >"$t/model/model_index.json"
cp "$fx/python_fixture.safetensors" "$t/model/transformer/diffusion_pytorch_model.safetensors"
"$inspect" "$t/model" >"$t/out"
grep -q 'model directory' "$t/out" || fail "model dir"
grep -q 'transformer/diffusion_pytorch_model.safetensors' "$t/out" || fail "weights in subdir"
grep -q 'transformer/config.json' "$t/out" || fail "json files listed"
"$inspect" --verify "$t/model" | grep -q 'OK' || fail "model dir verify"
printf '{"broken": ' >"$t/model/transformer/config.json"
rc=0; "$inspect" --verify "$t/model" >/dev/null 2>"$t/err" || rc=$?
[ "$rc" = 1 ] || fail "broken config.json not caught"

# A missing file.
rc=0; "$inspect" "$t/nope.safetensors" 2>"$t/err" || rc=$?
[ "$rc" = 1 ] && grep -q 'nope.safetensors' "$t/err" || fail "missing file"
echo "inspect: all checks passed"
