# The dit toolkit. `make` builds every tool into bin/, `make test` runs the
# CPU test suite (and compiles every CUDA source where nvcc exists),
# `make test SANITIZE=1` does the same under ASan and UBSan.

PREFIX  ?= /usr/local
CC      ?= cc
NVCC    ?= $(shell command -v nvcc 2>/dev/null || { test -x /usr/local/cuda/bin/nvcc && echo /usr/local/cuda/bin/nvcc; })
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
VERSION := 0.1.0

WARN     = -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wno-unused-parameter \
           -Wno-format-truncation
CFLAGS  ?= -O2 -g
CPPFLAGS += -I. -D_GNU_SOURCE -DDIT_VERSION='"$(VERSION)"' $(shell pkg-config --cflags openblas 2>/dev/null)
ALL_CFLAGS = -std=c11 $(WARN) -fopenmp -pthread $(CFLAGS)
LDLIBS  = -lisal -lcsv -larchive -ljpeg -lspng -lwebp -lexif -ljansson -lxxhash -lopenblas -lsentencepiece_train -lsentencepiece -lstdc++ \
          -lm -lpthread -fopenmp
# C++ sources of the library (models/*/*.cc: shims over C++-only APIs such as
# libsentencepiece's), with the sanitizers of SANITIZE=1 (EMU_SANFLAGS).
CXXWARN  = -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter
ALL_CXXFLAGS = -std=c++17 $(CXXWARN) -pthread $(CFLAGS) $(if $(filter san,$(VARIANT)),$(EMU_SANFLAGS))

ifeq ($(SANITIZE),1)
  VARIANT   = san
  CFLAGS    = -O1 -g
  ALL_CFLAGS += -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
  LDLIBS    += -fsanitize=address,undefined
  BINDIR    = build/san/bin
else
  VARIANT   = release
  BINDIR    = bin
endif
OBJDIR = build/$(VARIANT)

ifneq ($(NVCC),)
  HAVE_CUDA = 1
  CPPFLAGS += -DDIT_HAVE_CUDA=1
  NVCCFLAGS ?= -O2 -std=c++17 -Xcompiler -Wall,-Wextra,-Werror,-Wno-unused-parameter -Werror all-warnings \
               -gencode arch=compute_90,code=sm_90 -I.
  # Static cudart: the binaries run on machines without the CUDA toolkit
  # and simply report that no GPU is visible.
  LDLIBS += -L$(CUDA_HOME)/lib64 -lcudart_static -ldl -lrt -lstdc++
endif

LIB_SRCS  = $(wildcard libcommon/*.c formats/*.c image/*.c data/*.c kernels/*.c kernels/ops/*.c kernels/cpu/*.c nn/*.c models/*.c models/*/*.c diffusion/*.c train/*.c)
LIB_CXX_SRCS = $(wildcard models/*/*.cc)
LIB_OBJS  = $(LIB_SRCS:%.c=$(OBJDIR)/%.o) $(LIB_CXX_SRCS:%.cc=$(OBJDIR)/%.o)
CUDA_SRCS = $(wildcard kernels/cuda/*.cu)
CUDA_OBJS = $(if $(HAVE_CUDA),$(CUDA_SRCS:%.cu=$(OBJDIR)/%.cu.o))
TOOLS     = $(patsubst cmd/%.c,%,$(wildcard cmd/dit-*.c))
TOOL_BINS = $(TOOLS:%=$(BINDIR)/%)
TEST_SRCS = $(wildcard tests/*.c)
TEST_OBJS = $(TEST_SRCS:%.c=$(OBJDIR)/%.o)
TEST_BIN  = $(OBJDIR)/tests/run_tests
MANPAGES  = $(wildcard man/man1/*.1 man/man5/*.5 man/man7/*.7)
LIBDIT    = $(OBJDIR)/libdit.a
EXAMPLE_BINS = $(patsubst examples/%.c,$(OBJDIR)/examples/%,$(wildcard examples/*.c))

.PHONY: all test test-unit test-cuda test-cuda-emu cuda-check install deps demo demo-t2i clean lint-man bench
.DELETE_ON_ERROR:
.SECONDARY:

all: $(TOOL_BINS) $(EXAMPLE_BINS)

$(OBJDIR)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -MMD -MP -c -o $@ $<

$(OBJDIR)/%.o: %.cc
	@mkdir -p $(dir $@)
	$(CXX) $(CPPFLAGS) $(ALL_CXXFLAGS) -MMD -MP -c -o $@ $<

$(OBJDIR)/%.cu.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -MMD -MP -c -o $@ $<

$(LIBDIT): $(LIB_OBJS) $(CUDA_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(BINDIR)/%: $(OBJDIR)/cmd/%.o $(LIBDIT)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(LIBDIT) $(LDLIBS)

$(TEST_BIN): $(TEST_OBJS) $(LIBDIT)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $(TEST_OBJS) $(LIBDIT) $(LDLIBS)

BENCH_BINS = $(patsubst bench/%.c,$(OBJDIR)/bench/%,$(wildcard bench/*.c))
$(OBJDIR)/bench/%: $(OBJDIR)/bench/%.o $(LIBDIT)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(LIBDIT) $(LDLIBS)
# Benchmark programs (bench/*.c); the scripts beside them run them.
bench: $(BENCH_BINS)

# libFuzzer targets (tests/fuzz/fuzz_*.c, each picked up by name; see
# tests/fuzz/README.md): `make fuzz` builds build/fuzz/fuzz_NAME with clang,
# ASan and UBSan, against the library's C sources built by clang in
# build/fuzz (no CUDA, no C++: a target needing those would have to add
# them). Not part of `make test`, which never compiles tests/fuzz. Clang's
# warnings are shown but not fatal there: gcc is the compiler of record.
FUZZ_CC      ?= clang
FUZZ_DIR      = build/fuzz
FUZZ_SANFLAGS = -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
FUZZ_BINS     = $(patsubst tests/fuzz/%.c,$(OBJDIR)/%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_LIB      = $(OBJDIR)/libdit_c.a
.PHONY: fuzz fuzz-targets
fuzz:
	$(MAKE) --no-print-directory CC=$(FUZZ_CC) NVCC= OBJDIR=$(FUZZ_DIR) BINDIR=$(FUZZ_DIR)/bin \
	  CFLAGS='-O1 -g $(FUZZ_SANFLAGS) -fsanitize=fuzzer-no-link' \
	  WARN='$(filter-out -Werror -Wno-format-truncation,$(WARN)) -Wno-pass-failed' fuzz-targets
fuzz-targets: $(FUZZ_BINS)
$(FUZZ_LIB): $(LIB_SRCS:%.c=$(OBJDIR)/%.o)
	@rm -f $@
	ar rcs $@ $^
$(OBJDIR)/fuzz_%: $(OBJDIR)/tests/fuzz/fuzz_%.o $(FUZZ_LIB)
	$(CC) $(ALL_CFLAGS) -fsanitize=fuzzer -o $@ $< $(FUZZ_LIB) $(LDLIBS)

# Example programs (examples/*.c, such as the demo's data generator); the
# tool tests find them through DIT_EXAMPLES.
$(OBJDIR)/examples/%: $(OBJDIR)/examples/%.o $(LIBDIT)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(LIBDIT) $(LDLIBS)

# The CUDA backend under the CPU emulator (tests/cuda_emu): the same
# kernels/cuda sources built by g++, every kernel run thread by thread, so
# that CI checks the kernels against the CPU backend without a GPU. Only
# lt.cu, the cuBLASLt calls, is swapped for the emulator's products.
EMU_SANFLAGS = -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
EMU_CXXFLAGS = -std=c++17 -Wall -Wextra -Werror -Wno-unused-parameter -Wno-unused-function \
  -Wno-unknown-pragmas -pthread -fopenmp $(CFLAGS) $(if $(filter san,$(VARIANT)),$(EMU_SANFLAGS)) \
  -DDIT_CUDA_EMU -include tests/cuda_emu/cuda_emu.h -I. -I$(CUDA_HOME)/include
EMU_BACKEND_OBJS = $(patsubst %.cu,$(OBJDIR)/emu/%.o,$(filter-out kernels/cuda/lt.cu,$(CUDA_SRCS))) \
                   $(patsubst %.cc,$(OBJDIR)/emu/%.o,$(wildcard tests/cuda_emu/*.cc))
EMU_OBJS      = $(EMU_BACKEND_OBJS) $(patsubst %.cu,$(OBJDIR)/emu/%.o,$(wildcard tests/cuda/*.cu))
# The tools linked with the emulated backend, for the tool scripts of
# tests/cuda/tools (--device cuda end to end).
EMU_BINDIR    = $(OBJDIR)/emu-bin
EMU_TOOL_BINS = $(TOOLS:%=$(EMU_BINDIR)/%)
CUDA_TEST_OBJS = $(patsubst %.c,$(OBJDIR)/%.o,$(wildcard tests/cuda/*.c)) $(OBJDIR)/tests/harness.o
EMU_TEST_BIN  = $(OBJDIR)/tests/run_cuda_emu_tests
CUDA_TEST_BIN = $(OBJDIR)/tests/run_cuda_tests

$(OBJDIR)/emu/%.o: %.cu
	@mkdir -p $(dir $@)
	$(CXX) $(CPPFLAGS) $(EMU_CXXFLAGS) -MMD -MP -x c++ -c -o $@ $<

$(OBJDIR)/emu/%.o: %.cc
	@mkdir -p $(dir $@)
	$(CXX) $(CPPFLAGS) $(EMU_CXXFLAGS) -MMD -MP -c -o $@ $<

$(EMU_TEST_BIN): $(CUDA_TEST_OBJS) $(LIB_OBJS) $(EMU_OBJS)
	@mkdir -p $(dir $@)
	$(CXX) $(EMU_CXXFLAGS) -o $@ $^ $(EMU_LDFLAGS) $(filter-out -lcudart_static,$(LDLIBS))

$(EMU_BINDIR)/%: $(OBJDIR)/cmd/%.o $(LIB_OBJS) $(EMU_BACKEND_OBJS)
	@mkdir -p $(dir $@)
	$(CXX) $(EMU_CXXFLAGS) -o $@ $^ $(EMU_LDFLAGS) $(filter-out -lcudart_static,$(LDLIBS))

# The same tests against a real GPU: `make test-cuda` (and under
# compute-sanitizer with CUDA_SANITIZER=1), on a machine that has one.
$(CUDA_TEST_BIN): $(CUDA_TEST_OBJS) $(LIBDIT) $(if $(HAVE_CUDA),$(patsubst %.cu,$(OBJDIR)/%.cu.o,$(wildcard tests/cuda/*.cu)))
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $(filter-out $(LIBDIT),$^) $(LIBDIT) $(LDLIBS)

test-cuda-emu: $(EMU_TEST_BIN) $(EMU_TOOL_BINS)
	DIT_TESTS=$(abspath tests/cuda) DIT_BIN=$(abspath $(EMU_BINDIR)) ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
	  UBSAN_OPTIONS=print_stacktrace=1 $(EMU_TEST_BIN) $(if $(K),-k $(K))

test-cuda: $(CUDA_TEST_BIN) $(TOOL_BINS)
ifneq ($(HAVE_CUDA),1)
	@echo "test-cuda: nvcc was not found, so this build has no CUDA backend"; exit 1
endif
	DIT_TESTS=$(abspath tests/cuda) DIT_BIN=$(abspath $(BINDIR)) DIT_REQUIRE_GPU=1 \
	  $(if $(CUDA_SANITIZER),$(CUDA_HOME)/bin/compute-sanitizer --error-exitcode 1 --tool memcheck) \
	  $(CUDA_TEST_BIN) $(if $(K),-k $(K))

# Every CUDA source must compile, GPU or not.
cuda-check: $(CUDA_OBJS)
ifeq ($(HAVE_CUDA),1)
	@echo "CUDA sources compiled with $(NVCC)"
else
	@echo "nvcc not found: CUDA sources not compiled"
endif

lint-man:
	@if [ -z "$(MANPAGES)" ]; then echo "no man pages yet"; \
	elif command -v mandoc >/dev/null; then \
	  out=$$(mandoc -Tlint -Wwarning $(MANPAGES) 2>&1); \
	  if [ -n "$$out" ]; then echo "$$out"; exit 1; fi; \
	  echo "man pages lint clean"; \
	else echo "mandoc not found: man pages not linted"; fi

test: $(TOOL_BINS) $(TEST_BIN) $(BENCH_BINS) $(EXAMPLE_BINS) cuda-check lint-man $(if $(HAVE_CUDA),test-cuda-emu)
	DIT_BIN=$(abspath $(BINDIR)) DIT_TESTS=$(abspath tests) DIT_EXAMPLES=$(abspath $(OBJDIR)/examples) \
	  ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
	  $(TEST_BIN) $(if $(K),-k $(K))

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man1 \
	  $(DESTDIR)$(PREFIX)/share/man/man5 $(DESTDIR)$(PREFIX)/share/man/man7
	install -m 755 $(TOOL_BINS) $(DESTDIR)$(PREFIX)/bin
	for m in $(MANPAGES); do \
	  install -m 644 $$m $(DESTDIR)$(PREFIX)/share/man/$$(basename $$(dirname $$m)); done

# Debian packages the build and the tests need; apt runs only when one is missing.
DEB_PACKAGES = build-essential pkg-config libjansson-dev libxxhash-dev libopenblas-dev \
  libcsv-dev libarchive-dev libjpeg62-turbo-dev libspng-dev libpng-dev libwebp-dev libexif-dev libisal-dev mandoc \
  libsentencepiece-dev
deps:
	@missing=$$(for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing: $$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	else echo "all build dependencies are installed"; fi

# The main job on an embedded default: shapes -> index -> bucket ->
# precompute -> train -> sample, on the CPU, ending with a grid PNG.
demo: all
	$(MAKE) -C examples demo BIN=$(abspath $(BINDIR)) SHAPES=$(abspath $(OBJDIR)/examples/make_shapes) \
	  OUT=$(abspath build/demo)

# The text-to-image demo: prompts -> a tiny F-Lite, on the CPU, nothing downloaded.
demo-t2i: all
	$(MAKE) -C examples demo-t2i BIN=$(abspath $(BINDIR)) SHAPES=$(abspath $(OBJDIR)/examples/make_shapes) \
	  MAKE_T5=$(abspath $(OBJDIR)/examples/make_t5) OUT=$(abspath build/demo)

clean:
	rm -rf build bin

-include $(shell find build -name '*.d' 2>/dev/null)
