#include "formats/lora_file.h"
#include "formats/torch_pt.h"
#include "libcommon/error.h"
#include "libcommon/half.h"
#include "libcommon/json.h"
#include "libcommon/names.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const format_names[] = {"diffusers", "peft", "kohya", "torch"};

int lora_format_parse(const char *name, enum lora_format *out)
{
    for (int i = 0; i < 3; i++)
        if (strcmp(name, format_names[i]) == 0) {
            *out = (enum lora_format)i;
            return 0;
        }
    return -1;
}

const char *lora_file_name(enum lora_format f, int ema)
{
    static const char *const names[3][2] = {
        {"pytorch_lora_weights.safetensors", "pytorch_lora_weights_ema.safetensors"},
        {"adapter_model.safetensors", "adapter_model_ema.safetensors"},
        {"lora_kohya.safetensors", "lora_kohya_ema.safetensors"},
    };
    return names[(unsigned)f < 3 ? f : 0][ema != 0];
}

const char *lora_format_name(enum lora_format f)
{
    return (unsigned)f < 4 ? format_names[f] : "?";
}

void lora_file_free(struct lora_file *f)
{
    for (size_t i = 0; i < f->n; i++)
        free(f->e[i].A), free(f->e[i].B);
    free(f->e);
    memset(f, 0, sizeof *f);
}

float lora_entry_scale(const struct lora_file *f, const struct lora_entry *e)
{
    return f->rslora ? e->alpha / sqrtf((float)e->rank) : e->alpha / (float)e->rank;
}

/* ---- reading ------------------------------------------------------------ */

enum part { PART_A, PART_B, PART_ALPHA, PART_NONE };

/* What a tensor name is: the module and which part, with the naming it
 * tells. Prefixes of whole pipelines and PEFT models come off. */
static enum part name_parse(const char *name, char *module, size_t size, enum lora_format *fmt, int *skip)
{
    static const struct {
        const char *suffix;
        enum part part;
        int kohya;
    } suffixes[] = {
        {".lora_A.weight", PART_A, 0},         {".lora_B.weight", PART_B, 0},
        {".lora_A.default.weight", PART_A, 0}, {".lora_B.default.weight", PART_B, 0},
        {".lora_down.weight", PART_A, 1},      {".lora_up.weight", PART_B, 1},
        {".alpha", PART_ALPHA, 1},
    };
    *skip = 0;
    const char *s = name;
    *fmt = LORA_FORMAT_TORCH;
    if (strncmp(s, "transformer.", 12) == 0)
        s += 12, *fmt = LORA_FORMAT_DIFFUSERS;
    else if (strncmp(s, "base_model.model.", 17) == 0)
        s += 17, *fmt = LORA_FORMAT_PEFT;
    /* adapters of a pipeline's other parts (text encoders) are not the denoiser's */
    if (strncmp(s, "text_encoder", 12) == 0 || strncmp(s, "lora_te", 7) == 0) {
        *skip = 1;
        return PART_NONE;
    }
    size_t len = strlen(s);
    for (size_t i = 0; i < sizeof suffixes / sizeof *suffixes; i++) {
        size_t n = strlen(suffixes[i].suffix);
        if (len > n && strcmp(s + len - n, suffixes[i].suffix) == 0 && len - n < size) {
            memcpy(module, s, len - n);
            module[len - n] = 0;
            if (suffixes[i].kohya)
                *fmt = LORA_FORMAT_KOHYA;
            return suffixes[i].part;
        }
    }
    return PART_NONE;
}

struct pending {
    char name[LORA_NAME_MAX];
    const struct st_tensor *a, *b, *alpha;
};

static struct pending *pending_get(struct pending **p, size_t *n, size_t *cap, const char *name)
{
    for (size_t i = 0; i < *n; i++)
        if (strcmp((*p)[i].name, name) == 0)
            return &(*p)[i];
    if (*n == *cap) {
        size_t c = *cap ? 2 * *cap : 64;
        struct pending *q = realloc(*p, c * sizeof *q);
        if (!q)
            return NULL;
        *p = q, *cap = c;
    }
    struct pending *e = &(*p)[(*n)++];
    memset(e, 0, sizeof *e);
    snprintf(e->name, sizeof e->name, "%s", name);
    return e;
}

/* A 2-D matrix, or a 1x1 convolution's [rows, cols, 1, 1] (kohya). */
static int matrix_shape(const struct st_tensor *t, int *rows, int *cols)
{
    if (t->ndim != 2 && !(t->ndim == 4 && t->shape[2] == 1 && t->shape[3] == 1))
        return -1;
    if (t->shape[0] < 1 || t->shape[1] < 1 || t->shape[0] > (1 << 20) || t->shape[1] > (1 << 20))
        return -1;
    *rows = (int)t->shape[0], *cols = (int)t->shape[1];
    return 0;
}

static float *tensor_f32(const char *path, const struct st_tensor *t)
{
    float *v = malloc((size_t)(t->nelem ? t->nelem : 1) * sizeof *v);
    if (!v) {
        err_set("%s: out of memory for %s", path, t->name);
        return NULL;
    }
    if (st_tensor_to_f32(t, v) != 0) {
        err_set("%s: %s is %s; a LoRA's tensors are F32, BF16 or F16", path, t->name, st_dtype_name(t->dtype));
        free(v);
        return NULL;
    }
    for (uint64_t i = 0; i < t->nelem; i++)
        if (!isfinite(v[i])) {
            err_set("%s: %s holds a non-finite value at element %llu", path, t->name, (unsigned long long)i);
            free(v);
            return NULL;
        }
    return v;
}

/* PEFT's pattern keys: a module matches when its name is the key or ends
 * with "." and the key. */
static json_t *pattern_get(json_t *patterns, const char *module)
{
    const char *key;
    json_t *v;
    const size_t len = strlen(module);
    json_object_foreach(patterns, key, v)
    {
        size_t n = strlen(key);
        if (n <= len && strcmp(module + len - n, key) == 0 && (n == len || module[len - n - 1] == '.'))
            return v;
    }
    return NULL;
}

/* LoraConfig's fields, from the diffusers header or adapter_config.json:
 * "transformer."-prefixed keys are the pipeline form. */
static json_t *config_field(json_t *cfg, const char *field)
{
    char key[64];
    snprintf(key, sizeof key, "transformer.%s", field);
    json_t *v = json_object_get(cfg, key);
    return v ? v : json_object_get(cfg, field);
}

static json_t *config_of(const char *path, const struct st_file *st, enum lora_format fmt)
{
    const char *meta = st_meta_get(st, "lora_adapter_metadata");
    if (meta) {
        json_t *j = json_read_buffer(path, meta, strlen(meta));
        if (!j)
            err_prefix("%s: the header's lora_adapter_metadata", path);
        return j ? j : json_null();
    }
    if (fmt != LORA_FORMAT_PEFT)
        return NULL;
    /* PEFT: adapter_config.json beside the weights */
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash)
        slash[1] = 0;
    else
        dir[0] = 0;
    char cfg[4200];
    snprintf(cfg, sizeof cfg, "%sadapter_config.json", dir);
    FILE *fp = fopen(cfg, "rb");
    if (!fp)
        return NULL;
    fclose(fp);
    json_t *j = json_read_file(cfg);
    return j ? j : json_null();
}

static int entry_alpha(const char *path, json_t *cfg, const struct pending *p, struct lora_entry *e)
{
    e->alpha = (float)e->rank; /* diffusers' and ComfyUI's assumption without one */
    if (p->alpha) {
        float *v = p->alpha->nelem == 1 ? tensor_f32(path, p->alpha) : NULL;
        if (!v) {
            if (p->alpha->nelem != 1)
                err_set("%s: %s has %llu elements, not one", path, p->alpha->name,
                        (unsigned long long)p->alpha->nelem);
            return -1;
        }
        if (*v != 0) /* kohya: 0 means the rank */
            e->alpha = *v;
        free(v);
    } else if (cfg) {
        json_t *ap = config_field(cfg, "alpha_pattern"), *a = ap ? pattern_get(ap, e->name) : NULL;
        if (!a)
            a = config_field(cfg, "lora_alpha");
        if (a && json_is_number(a))
            e->alpha = (float)json_number_value(a);
    }
    if (!isfinite(e->alpha) || e->alpha <= 0) {
        err_set("%s: module %s has alpha %g; a LoRA's alpha is a positive number", path, e->name, e->alpha);
        return -1;
    }
    return 0;
}

static int entry_make(const char *path, json_t *cfg, const struct pending *p, struct lora_entry *e)
{
    snprintf(e->name, sizeof e->name, "%s", p->name);
    if (!p->a || !p->b) {
        err_set("%s: module %s has %s but no %s", path, p->name, p->a ? p->a->name : p->b ? p->b->name : "an alpha",
                !p->a ? "lora_A (lora_down)" : "lora_B (lora_up)");
        return -1;
    }
    int ra, in, out, rb;
    if (matrix_shape(p->a, &ra, &in) != 0 || matrix_shape(p->b, &out, &rb) != 0) {
        char sa[64], sb[64];
        st_shape_text(sa, sizeof sa, p->a->ndim, p->a->shape);
        st_shape_text(sb, sizeof sb, p->b->ndim, p->b->shape);
        err_set("%s: module %s: %s %s and %s %s are not a LoRA's [rank, in] and [out, rank] matrices", path,
                p->name, p->a->name, sa, p->b->name, sb);
        return -1;
    }
    if (ra != rb) {
        err_set("%s: module %s: %s has rank %d, %s rank %d", path, p->name, p->a->name, ra, p->b->name, rb);
        return -1;
    }
    e->rank = ra, e->in = in, e->out = out;
    if (cfg) {
        json_t *rp = config_field(cfg, "rank_pattern"), *r = rp ? pattern_get(rp, e->name) : NULL;
        if (!r)
            r = config_field(cfg, "r");
        if (r && json_is_integer(r) && json_integer_value(r) != ra) {
            err_set("%s: module %s has rank %d, the adapter's configuration says %lld", path, p->name, ra,
                    (long long)json_integer_value(r));
            return -1;
        }
    }
    if (entry_alpha(path, cfg, p, e) != 0)
        return -1;
    if (!(e->A = tensor_f32(path, p->a)) || !(e->B = tensor_f32(path, p->b)))
        return -1;
    return 0;
}

static int read_tensors(const char *path, const struct st_file *st, struct lora_file *f, int whole_model)
{
    struct pending *p = NULL;
    size_t np = 0, cap = 0;
    int rc = 0, seen = -1;
    json_t *cfg = NULL;
    for (size_t i = 0; rc == 0 && i < st->n_tensors; i++) {
        const struct st_tensor *t = &st->tensors[i];
        char module[LORA_NAME_MAX];
        enum lora_format fmt;
        int skip;
        enum part part = name_parse(t->name, module, sizeof module, &fmt, &skip);
        if (skip)
            continue;
        if (part == PART_NONE) {
            if (whole_model) /* model.pt: the base layers beside the adapters */
                continue;
            err_set("%s: %s is not a LoRA tensor of a known naming (diffusers, PEFT, kohya)", path, t->name);
            rc = -1;
            break;
        }
        if (seen < 0)
            seen = (int)fmt;
        else if (seen != (int)fmt && !(fmt == LORA_FORMAT_KOHYA && part == PART_ALPHA)) {
            err_set("%s: %s is in the %s naming, earlier tensors in the %s naming", path, t->name,
                    format_names[fmt], format_names[seen]);
            rc = -1;
            break;
        }
        struct pending *e = pending_get(&p, &np, &cap, module);
        if (!e) {
            err_set("%s: out of memory", path);
            rc = -1;
            break;
        }
        const struct st_tensor **slot = part == PART_A ? &e->a : part == PART_B ? &e->b : &e->alpha;
        if (*slot) {
            err_set("%s: %s and %s are the same part of module %s", path, (*slot)->name, t->name, module);
            rc = -1;
            break;
        }
        *slot = t;
    }
    if (rc == 0 && np == 0) {
        err_set("%s: no LoRA tensors (lora_A/lora_B or lora_down/lora_up)", path);
        rc = -1;
    }
    if (rc == 0) {
        f->format = seen == LORA_FORMAT_KOHYA ? LORA_FORMAT_KOHYA : (enum lora_format)seen;
        f->kohya_names = f->format == LORA_FORMAT_KOHYA;
        cfg = config_of(path, st, f->format);
        if (cfg && json_is_null(cfg))
            rc = -1;
    }
    if (rc == 0 && cfg) {
        json_t *rs = config_field(cfg, "use_rslora"), *dr = config_field(cfg, "lora_dropout");
        f->rslora = rs && json_is_true(rs);
        f->dropout = dr && json_is_number(dr) ? (float)json_number_value(dr) : 0;
    }
    if (rc == 0 && !(f->e = calloc(np, sizeof *f->e))) {
        err_set("%s: out of memory", path);
        rc = -1;
    }
    for (size_t i = 0; rc == 0 && i < np; i++) {
        rc = entry_make(path, cfg, &p[i], &f->e[i]);
        f->n = i + 1;
    }
    json_decref(cfg);
    free(p);
    return rc;
}

/* The tensors of st (from a safetensors file or a torch file's bytes) as
 * adapters; torch: a torch.save file, whose naming is F-Lite's. */
static int read_opened(const char *path, struct st_file *st, int torch, struct lora_file *f)
{
    /* A torch file holding a whole model keeps only its adapters. */
    int whole_model = 0;
    for (size_t i = 0; torch && i < st->n_tensors; i++)
        whole_model |= str_ends_with(st->tensors[i].name, ".base_layer.weight");
    int rc = read_tensors(path, st, f, whole_model);
    if (rc == 0 && torch && f->format != LORA_FORMAT_KOHYA)
        f->format = LORA_FORMAT_TORCH;
    if (rc != 0)
        lora_file_free(f);
    return rc;
}

/* The zip magic of torch.save's format. */
static int zip_magic(const unsigned char *m, size_t n)
{
    return n >= 4 && m[0] == 'P' && m[1] == 'K' && m[2] == 3 && m[3] == 4;
}

int lora_file_read(const char *path, struct lora_file *f)
{
    memset(f, 0, sizeof *f);
    FILE *fp = fopen(path, "rb");
    unsigned char m[4] = {0};
    size_t got = fp ? fread(m, 1, 4, fp) : 0;
    if (fp)
        fclose(fp);
    void *bytes = NULL;
    size_t size = 0;
    struct st_file *st;
    const int torch = zip_magic(m, got);
    if (torch) {
        if (torch_pt_read(path, &bytes, &size, NULL) != 0)
            return -1;
        st = st_open_buffer(path, bytes, size);
    } else {
        st = st_open(path);
    }
    int rc = st ? read_opened(path, st, torch, f) : -1;
    st_close(st);
    free(bytes);
    return rc;
}

int lora_file_read_buffer(const char *name, const void *data, size_t len, struct lora_file *f)
{
    memset(f, 0, sizeof *f);
    void *bytes = NULL;
    size_t size = 0;
    const int torch = zip_magic(data, len);
    if (torch && torch_pt_read_buffer(name, data, len, &bytes, &size, NULL) != 0)
        return -1;
    struct st_file *st = torch ? st_open_buffer(name, bytes, size) : st_open_buffer(name, data, len);
    int rc = st ? read_opened(name, st, torch, f) : -1;
    st_close(st);
    free(bytes);
    return rc;
}

static void kohya_name(char *out, size_t size, const char *module)
{
    int n = snprintf(out, size, "lora_unet_%s", module);
    for (int i = 10; i < n && (size_t)i < size; i++)
        if (out[i] == '.')
            out[i] = '_';
}

int lora_file_resolve(struct lora_file *f, const char *const *modules, size_t n)
{
    if (!f->kohya_names)
        return 0;
    char k[LORA_NAME_MAX + 16];
    for (size_t i = 0; i < f->n; i++) {
        struct lora_entry *e = &f->e[i];
        size_t j = 0;
        for (; j < n; j++) {
            kohya_name(k, sizeof k, modules[j]);
            if (strcmp(k, e->name) == 0)
                break;
        }
        if (j == n) {
            err_set("kohya module %s names none of the model's layers", e->name);
            return -1;
        }
        snprintf(e->name, sizeof e->name, "%s", modules[j]);
    }
    f->kohya_names = 0;
    return 0;
}

/* ---- writing ------------------------------------------------------------ */

/* The data of a tensor in dt, malloc'd. */
static void *data_in(const float *v, size_t n, enum st_dtype dt)
{
    void *out = malloc((n ? n : 1) * (dt == ST_F32 ? 4 : 2));
    if (!out)
        return NULL;
    if (dt == ST_F32)
        memcpy(out, v, n * sizeof *v);
    else if (dt == ST_BF16)
        f32_to_bf16_array(v, out, n);
    else
        f32_to_f16_array(v, out, n);
    return out;
}

/* LoraConfig's fields for the modules: one r and alpha, the others in the
 * patterns (a merged file's modules may differ). */
static json_t *config_json(const struct lora_file *f, const char *targets, const char *prefix)
{
    json_t *j = json_object(), *rp = json_object(), *ap = json_object(), *tm = json_array();
    const struct lora_entry *e0 = &f->e[0];
    for (size_t i = 0; i < f->n; i++) {
        const struct lora_entry *e = &f->e[i];
        if (e->rank != e0->rank)
            json_object_set_new(rp, e->name, json_integer(e->rank));
        if (e->alpha != e0->alpha)
            json_object_set_new(ap, e->name, json_real(e->alpha));
        if (!targets)
            json_array_append_new(tm, json_string(e->name));
    }
    for (const char *t = targets; t && *t;) {
        const char *end = strchr(t, ',');
        size_t n = end ? (size_t)(end - t) : strlen(t);
        json_array_append_new(tm, json_stringn(t, n));
        t = end ? end + 1 : t + n;
    }
    struct {
        const char *key;
        json_t *v;
    } fields[] = {
        {"peft_type", json_string("LORA")},
        {"r", json_integer(e0->rank)},
        {"lora_alpha", json_real(e0->alpha)},
        {"lora_dropout", json_real(f->dropout)},
        {"use_rslora", json_boolean(f->rslora)},
        {"bias", json_string("none")},
        {"target_modules", tm},
        {"rank_pattern", rp},
        {"alpha_pattern", ap},
        {"init_lora_weights", json_true()},
    };
    char key[96];
    for (size_t i = 0; i < sizeof fields / sizeof *fields; i++) {
        snprintf(key, sizeof key, "%s%s", prefix, fields[i].key);
        json_object_set_new(j, key, fields[i].v);
    }
    return j;
}

static int write_peft_config(const char *path, const struct lora_file *f, const char *targets)
{
    char cfg[4200];
    snprintf(cfg, sizeof cfg, "%s", path);
    char *slash = strrchr(cfg, '/');
    snprintf(slash ? slash + 1 : cfg, sizeof cfg - (size_t)(slash ? slash + 1 - cfg : 0), "adapter_config.json");
    json_t *j = config_json(f, targets, "");
    int rc = !j || json_write_file(cfg, j) != 0;
    json_decref(j);
    return rc ? -1 : 0;
}

int lora_file_write(const char *path, const struct lora_file *f, enum lora_format fmt, enum st_dtype dt,
                    const char *targets)
{
    if (f->n == 0 || (dt != ST_F32 && dt != ST_BF16 && dt != ST_F16) || fmt == LORA_FORMAT_TORCH) {
        err_set("%s: a LoRA is written with modules, in F32, BF16 or F16, as diffusers, peft or kohya", path);
        return -1;
    }
    struct st_writer *w = st_writer_new();
    void **data = calloc(3 * f->n, sizeof *data);
    int rc = !w || !data;
    const char *prefix = fmt == LORA_FORMAT_PEFT ? "base_model.model." : "transformer.";
    for (size_t i = 0; rc == 0 && i < f->n; i++) {
        const struct lora_entry *e = &f->e[i];
        char name[LORA_NAME_MAX + 64], base[LORA_NAME_MAX + 32];
        const int64_t sa[2] = {e->rank, e->in}, sb[2] = {e->out, e->rank};
        rc = !(data[3 * i] = data_in(e->A, (size_t)e->rank * e->in, dt)) ||
             !(data[3 * i + 1] = data_in(e->B, (size_t)e->out * e->rank, dt));
        if (rc)
            break;
        if (fmt == LORA_FORMAT_KOHYA) {
            kohya_name(base, sizeof base, e->name);
            /* kohya has no rsLoRA: the alpha that gives the same scale */
            float alpha = f->rslora ? e->alpha * sqrtf((float)e->rank) : e->alpha;
            rc = !(data[3 * i + 2] = malloc(sizeof(float)));
            if (rc)
                break;
            memcpy(data[3 * i + 2], &alpha, sizeof alpha);
            snprintf(name, sizeof name, "%s.lora_down.weight", base);
            rc = st_writer_add(w, name, dt, 2, sa, data[3 * i]);
            snprintf(name, sizeof name, "%s.lora_up.weight", base);
            rc = rc || st_writer_add(w, name, dt, 2, sb, data[3 * i + 1]);
            snprintf(name, sizeof name, "%s.alpha", base);
            rc = rc || st_writer_add(w, name, ST_F32, 0, NULL, data[3 * i + 2]);
        } else {
            snprintf(name, sizeof name, "%s%s.lora_A.weight", prefix, e->name);
            rc = st_writer_add(w, name, dt, 2, sa, data[3 * i]);
            snprintf(name, sizeof name, "%s%s.lora_B.weight", prefix, e->name);
            rc = rc || st_writer_add(w, name, dt, 2, sb, data[3 * i + 1]);
        }
    }
    if (rc == 0 && fmt == LORA_FORMAT_DIFFUSERS) {
        json_t *j = config_json(f, targets, "transformer.");
        char *text = j ? json_dumps(j, JSON_SORT_KEYS) : NULL;
        rc = !text || st_writer_meta(w, "lora_adapter_metadata", text) != 0;
        free(text);
        json_decref(j);
    }
    rc = rc || st_writer_meta(w, "format", "pt") != 0 || st_writer_write(w, path) != 0;
    if (rc == 0 && fmt == LORA_FORMAT_PEFT)
        rc = write_peft_config(path, f, targets);
    if (rc && !*err_get())
        err_set("%s: out of memory", path);
    st_writer_free(w);
    for (size_t i = 0; data && i < 3 * f->n; i++)
        free(data[i]);
    free(data);
    return rc ? -1 : 0;
}
