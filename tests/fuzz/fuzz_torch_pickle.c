/* libFuzzer target: the unpickler of formats/torch_pt.c behind a valid zip.
 * Mutating a whole .pt file mostly breaks the zip's CRCs, so the pickle is
 * rarely reached; here the input is the pickle itself, zipped as torch
 * lays it out (archive/data.pkl, byteorder, data/<k>) with a valid CRC.
 *
 * Input: one byte n (storages, at most 16), n little-endian u32 sizes
 * (each taken modulo 64 KiB), then data.pkl. archive/data/<k> holds size_k
 * bytes of a fixed pattern. Seeds: tests/fuzz/corpus/torch_pickle/ (made
 * from the fixtures by tests/reference/make_torch_pt.py). */
#include "formats/torch_pt.h"
#include "libcommon/safetensors.h"

#include <archive.h>
#include <archive_entry.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_STORAGES 16
#define MAX_STORAGE (1u << 16)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int add_member(struct archive *a, const char *name, const void *p, size_t n)
{
    struct archive_entry *e = archive_entry_new();
    archive_entry_set_pathname(e, name);
    archive_entry_set_size(e, (la_int64_t)n);
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0644);
    int ok = archive_write_header(a, e) == ARCHIVE_OK && archive_write_data(a, p, n) == (la_ssize_t)n;
    archive_entry_free(e);
    return ok ? 0 : -1;
}

/* The zip of the pickle and its storages, in buf[cap]; its length, or 0. */
static size_t zip_pickle(unsigned char *buf, size_t cap, const uint8_t *pkl, size_t pkl_len,
                         const uint32_t *sizes, size_t n, const unsigned char *pattern)
{
    struct archive *a = archive_write_new();
    size_t used = 0;
    int ok = archive_write_set_format_zip(a) == ARCHIVE_OK && archive_write_zip_set_compression_store(a) == ARCHIVE_OK &&
             archive_write_open_memory(a, buf, cap, &used) == ARCHIVE_OK;
    ok = ok && add_member(a, "archive/data.pkl", pkl, pkl_len) == 0;
    ok = ok && add_member(a, "archive/byteorder", "little", 6) == 0;
    for (size_t i = 0; i < n && ok; i++) {
        char name[32];
        snprintf(name, sizeof name, "archive/data/%zu", i);
        ok = add_member(a, name, pattern, sizes[i]) == 0;
    }
    ok = ok && archive_write_close(a) == ARCHIVE_OK;
    archive_write_free(a);
    return ok ? used : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static unsigned char pattern[MAX_STORAGE];
    if (!pattern[1])
        for (size_t i = 0; i < sizeof pattern; i++)
            pattern[i] = (unsigned char)(i * 131 + 7);
    if (size < 1)
        return 0;
    size_t n = data[0] % (MAX_STORAGES + 1), head = 1 + 4 * n, total = 0;
    if (size < head)
        return 0;
    uint32_t sizes[MAX_STORAGES];
    for (size_t i = 0; i < n; i++) {
        const uint8_t *s = data + 1 + 4 * i;
        sizes[i] = ((uint32_t)s[0] | (uint32_t)s[1] << 8 | (uint32_t)s[2] << 16 | (uint32_t)s[3] << 24) % MAX_STORAGE;
        total += sizes[i];
    }
    size_t cap = total + (size - head) + 4096 + 512 * n;
    unsigned char *zip = malloc(cap);
    size_t len = zip ? zip_pickle(zip, cap, data + head, size - head, sizes, n, pattern) : 0;
    void *bytes = NULL;
    size_t out = 0;
    if (len && torch_pt_read_buffer("fuzz.pt", zip, len, &bytes, &out, NULL) == 0) {
        struct st_file *f = st_open_buffer("fuzz.pt", bytes, out);
        if (!f)
            abort(); /* the reader built a file the safetensors reader refuses */
        st_close(f);
        free(bytes);
    }
    free(zip);
    return 0;
}
