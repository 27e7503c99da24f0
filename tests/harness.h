/* A small test harness.
 *
 * TEST(name) { ... } registers a test; each runs in a forked child, so a
 * crash fails that test alone and the run goes on. CHECK* record a failure
 * and continue. The runner also runs every shell script in tests/tools as one
 * test and ends with the line "N passed, N failed". */
#ifndef DIT_TEST_HARNESS_H
#define DIT_TEST_HARNESS_H

#include "kernels/kernels.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

typedef void (*test_fn)(void);
void test_register(const char *file, const char *name, test_fn fn);
void test_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A fresh empty directory for the running test, removed after it. */
const char *test_tmpdir(void);
/* Joins test_tmpdir() and name into a static buffer ring (8 entries). */
const char *test_tmp_path(const char *name);
/* Path of a file under tests/ (the source tree), e.g. "fixtures/a.tsv". */
const char *test_source_path(const char *rel);
/* Writes size bytes to path; fails the test on error. */
void test_write_file(const char *path, const void *data, size_t size);
/* Reads a whole file (NUL-terminated); *size may be NULL. Caller frees. */
char *test_read_file(const char *path, size_t *size);
/* Runs fn in a child with stderr to a file (a dispatcher's abort, say);
 * returns what it wrote (malloc'd) and sets *sig to the signal that ended
 * it (0: it returned). */
char *test_stderr_of(void (*fn)(void), int *sig);
/* n normal values times scale from Philox stream (seed, purpose): each test
 * file passes a purpose of its own, so no product stream is reused. And n
 * copies of v. Both malloc'd (never NULL for n = 0). */
float *test_normal(size_t n, uint64_t seed, float scale, uint32_t purpose);
float *test_filled(size_t n, float v);
/* Goldens: the safetensors file rel under tests/ (fails the test when it
 * cannot be opened; NULL then), and a malloc'd copy of its tensor name,
 * which must be F32 with n elements (copied: the mapping need not be
 * aligned for float); zeros after a failure. */
struct st_file;
struct st_file *test_goldens_open(const char *rel);
/* A broken copy of a model folder, for bad-input tests: dir/config.json
 * holds config_text and dir/weights the tensors of the safetensors file
 * src_rel (under tests/) with `drop` left out, `rename` ("FROM=TO")
 * renamed, `reshape` given the shape [1, n] and `retype` relabelled I32;
 * each NULL for none. */
void test_write_model_variant(const char *dir, const char *weights, const char *config_text, const char *src_rel,
                              const char *drop, const char *rename, const char *reshape, const char *retype);
float *test_golden_f32(const struct st_file *f, const char *name, size_t n);
/* got against want within tol, the kernel tests' measure: every
 * |got - want| / (|want| + rms(want)) (the rms a floor where want nears 0:
 * a gradient is a sum of terms that may cancel; an infinite want must be
 * met exactly) and the norm-wise ||got - want|| / ||want||; prints the
 * largest errors seen. And a bit-for-bit comparison. */
/* A CPU context of that many threads (0: all); fails the test when none. */
struct kctx test_cpu_ctx(int threads);
void test_check_rel(const char *file, int line, const char *what, const float *got, const float *want, size_t n,
                    double tol);
void test_check_same_bits(const char *file, int line, const char *what, const float *a, const float *b, size_t n);

#define TEST(name)                                                             \
    static void test_##name(void);                                             \
    __attribute__((constructor)) static void test_register_##name(void)        \
    {                                                                          \
        test_register(__FILE__, #name, test_##name);                           \
    }                                                                          \
    static void test_##name(void)

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond))                                                           \
            test_fail(__FILE__, __LINE__, "CHECK(%s)", #cond);                 \
    } while (0)

#define CHECK_INT(a, b)                                                        \
    do {                                                                       \
        long long va_ = (long long)(a), vb_ = (long long)(b);                  \
        if (va_ != vb_)                                                        \
            test_fail(__FILE__, __LINE__, "%s == %s: %lld != %lld", #a, #b,    \
                      va_, vb_);                                               \
    } while (0)

#define CHECK_STR(a, b)                                                        \
    do {                                                                       \
        const char *sa_ = (a), *sb_ = (b);                                     \
        if (!sa_ || !sb_ || strcmp(sa_, sb_) != 0)                             \
            test_fail(__FILE__, __LINE__, "%s == %s: \"%s\" != \"%s\"", #a, #b,\
                      sa_ ? sa_ : "(null)", sb_ ? sb_ : "(null)");             \
    } while (0)

/* a contains b */
#define CHECK_CONTAINS(a, b)                                                   \
    do {                                                                       \
        const char *sa_ = (a), *sb_ = (b);                                     \
        if (!sa_ || !sb_ || !strstr(sa_, sb_))                                 \
            test_fail(__FILE__, __LINE__, "\"%s\" does not contain \"%s\"",    \
                      sa_ ? sa_ : "(null)", sb_ ? sb_ : "(null)");             \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                  \
    do {                                                                       \
        double da_ = (double)(a), db_ = (double)(b);                           \
        if (!(fabs(da_ - db_) <= (tol)))                                       \
            test_fail(__FILE__, __LINE__, "%s ~ %s: %.9g vs %.9g (tol %g)",    \
                      #a, #b, da_, db_, (double)(tol));                        \
    } while (0)

#endif
