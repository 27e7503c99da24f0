/* formats/model_dir: the diffusers model directory (config.json, weights
 * single or sharded with the index, model_index.json), and the DiT's model
 * directory through it. */
#include "tests/harness.h"
#include "formats/model_dir.h"
#include "libcommon/error.h"
#include "libcommon/json.h"
#include "models/dit/dit.h"
#include "models/dit/weights.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define N_TENSORS 5

/* Five tensors of three dtypes, 376 bytes of data in all. */
struct sample {
    float a[24], b[8];
    uint16_t h[16];
    int64_t ids[6];
    float scalar;
    struct model_tensor t[N_TENSORS];
};

static void sample_fill(struct sample *s)
{
    for (int i = 0; i < 24; i++)
        s->a[i] = (float)i * 0.5f - 3.0f;
    for (int i = 0; i < 8; i++)
        s->b[i] = (float)(i * i);
    for (int i = 0; i < 16; i++)
        s->h[i] = (uint16_t)(0x3f80 + i); /* bf16 around 1.0 */
    for (int i = 0; i < 6; i++)
        s->ids[i] = 1000000000000LL * i;
    s->scalar = 42.0f;
    s->t[0] = (struct model_tensor){"blocks.0.weight", ST_F32, 2, {4, 6}, s->a};
    s->t[1] = (struct model_tensor){"blocks.0.bias", ST_F32, 1, {8}, s->b};
    s->t[2] = (struct model_tensor){"emb.table", ST_BF16, 2, {2, 8}, s->h};
    s->t[3] = (struct model_tensor){"ids", ST_I64, 1, {6}, s->ids};
    s->t[4] = (struct model_tensor){"scale", ST_F32, 0, {0}, &s->scalar};
}

static const uint64_t sample_bytes = 24 * 4 + 8 * 4 + 16 * 2 + 6 * 8 + 4;

/* Every tensor of s is in the set, with its dtype, shape and bytes. */
static void check_set(const struct st_set *set, const struct sample *s)
{
    CHECK(set != NULL);
    if (!set)
        return;
    CHECK_INT(set->n_tensors, N_TENSORS);
    for (int i = 0; i < N_TENSORS; i++) {
        const struct st_file *f;
        const struct st_tensor *t = st_set_find(set, s->t[i].name, &f);
        CHECK(t != NULL);
        if (!t)
            continue;
        CHECK_INT(t->dtype, s->t[i].dtype);
        CHECK_INT(t->ndim, s->t[i].ndim);
        for (int k = 0; k < t->ndim; k++)
            CHECK_INT(t->shape[k], s->t[i].shape[k]);
        CHECK(memcmp(t->data, s->t[i].data, t->nbytes) == 0);
        CHECK_STR(st_meta_get(f, "format"), "pt");
    }
}

static int exists(const char *dir, const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return access(path, F_OK) == 0;
}

static const char *subdir(const char *name)
{
    const char *d = test_tmp_path(name);
    CHECK_INT(mkdir(d, 0777), 0);
    return d;
}

TEST(weights_single_file_round_trip)
{
    struct sample s;
    sample_fill(&s);
    const char *dir = test_tmpdir();
    CHECK_INT(model_dir_write_weights(dir, MODEL_DIR_DIFFUSERS_BASE, s.t, N_TENSORS, 0), 0);
    CHECK(exists(dir, "diffusion_pytorch_model.safetensors"));
    CHECK(!exists(dir, "diffusion_pytorch_model.safetensors.index.json"));
    struct st_set *set = model_dir_open_weights(dir);
    check_set(set, &s);
    CHECK_INT(set ? set->n_files : 0, 1);
    st_set_close(set);
    /* A duplicate name is refused before anything is written. */
    const char *d2 = subdir("dup");
    s.t[1].name = s.t[0].name;
    CHECK(model_dir_write_weights(d2, MODEL_DIR_DIFFUSERS_BASE, s.t, N_TENSORS, 0) != 0);
    CHECK_CONTAINS(err_get(), "blocks.0.weight");
    CHECK(!exists(d2, "diffusion_pytorch_model.safetensors"));
}

TEST(weights_sharded_with_the_index_diffusers_writes)
{
    struct sample s;
    sample_fill(&s);
    const char *dir = test_tmpdir();
    /* 100 bytes a shard: the 96-byte matrix alone, then the rest in runs. */
    CHECK_INT(model_dir_write_weights(dir, MODEL_DIR_DIFFUSERS_BASE, s.t, N_TENSORS, 100), 0);
    CHECK(!exists(dir, "diffusion_pytorch_model.safetensors"));
    char index_path[4096];
    snprintf(index_path, sizeof index_path, "%s/diffusion_pytorch_model.safetensors.index.json", dir);
    json_t *index = json_read_file(index_path);
    CHECK(index != NULL);
    if (!index)
        return;
    CHECK_INT(json_integer_value(json_object_get(json_object_get(index, "metadata"), "total_size")),
              sample_bytes);
    json_t *map = json_object_get(index, "weight_map");
    CHECK_INT(json_object_size(map), N_TENSORS); /* every tensor mapped once */
    int n_shards = 0;
    for (int k = 1; k <= 9; k++) {
        char name[128];
        snprintf(name, sizeof name, "diffusion_pytorch_model-%05d-of-", k);
        size_t nl = strlen(name);
        const char *key;
        json_t *v;
        int used = 0;
        json_object_foreach(map, key, v) used |= strncmp(json_string_value(v), name, nl) == 0;
        n_shards += used;
    }
    CHECK(n_shards >= 3);
    const char *key;
    json_t *v;
    json_object_foreach(map, key, v)
    {
        char want[128];
        const char *file = json_string_value(v);
        int k = 0, n = 0;
        CHECK(file && sscanf(file, "diffusion_pytorch_model-%5d-of-%5d.safetensors", &k, &n) == 2);
        snprintf(want, sizeof want, "diffusion_pytorch_model-%05d-of-%05d.safetensors", k, n);
        CHECK_STR(file, want);
        CHECK_INT(n, n_shards);
        CHECK(exists(dir, file));
    }
    struct st_set *set = model_dir_open_weights(dir);
    check_set(set, &s);
    CHECK_INT(set ? set->n_files : 0, n_shards);
    st_set_close(set);
    json_decref(index);

    /* Saving again, single, leaves no shard or index of the sharded save;
     * and a sharded save after a single one removes the single file. */
    CHECK_INT(model_dir_write_weights(dir, MODEL_DIR_DIFFUSERS_BASE, s.t, N_TENSORS, 0), 0);
    CHECK(exists(dir, "diffusion_pytorch_model.safetensors"));
    CHECK(!exists(dir, "diffusion_pytorch_model.safetensors.index.json"));
    CHECK(!exists(dir, "diffusion_pytorch_model-00001-of-00003.safetensors"));
    CHECK_INT(model_dir_write_weights(dir, MODEL_DIR_DIFFUSERS_BASE, s.t, N_TENSORS, 200), 0);
    CHECK(!exists(dir, "diffusion_pytorch_model.safetensors"));
    CHECK(exists(dir, "diffusion_pytorch_model-00001-of-00002.safetensors"));
    CHECK_INT(model_dir_write_weights(dir, MODEL_DIR_DIFFUSERS_BASE, s.t, N_TENSORS, 100), 0);
    CHECK(!exists(dir, "diffusion_pytorch_model-00001-of-00002.safetensors"));
    set = model_dir_open_weights(dir);
    check_set(set, &s);
    st_set_close(set);
}

TEST(weights_under_transformers_names)
{
    struct sample s;
    sample_fill(&s);
    const char *dir = subdir("text_encoder");
    CHECK_INT(model_dir_write_weights(dir, MODEL_DIR_TRANSFORMERS_BASE, s.t, N_TENSORS, 100), 0);
    CHECK(exists(dir, "model.safetensors.index.json"));
    struct st_set *set = model_dir_open_weights(dir);
    check_set(set, &s);
    st_set_close(set);
    /* The fixture split by huggingface_hub and indexed as transformers does. */
    set = model_dir_open_weights(test_source_path("fixtures/safetensors/sharded"));
    CHECK(set != NULL);
    CHECK_INT(set ? set->n_files : 0, 2);
    CHECK_INT(set ? set->n_tensors : 0, 5);
    st_set_close(set);
}

static void write_text(const char *dir, const char *name, const char *text)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    test_write_file(path, text, strlen(text));
}

TEST(weights_errors_name_the_file)
{
    struct sample s;
    sample_fill(&s);
    const char *dir = test_tmpdir();
    CHECK(model_dir_open_weights(dir) == NULL);
    CHECK_CONTAINS(err_get(), "no weights");
    CHECK_CONTAINS(err_get(), "diffusion_pytorch_model.safetensors.index.json");
    CHECK(model_dir_open_weights(test_tmp_path("absent")) == NULL);
    CHECK_CONTAINS(err_get(), "absent");

    CHECK_INT(model_dir_write_weights(dir, MODEL_DIR_DIFFUSERS_BASE, s.t, N_TENSORS, 100), 0);
    /* A missing shard. */
    char shard[4096];
    snprintf(shard, sizeof shard, "%s/diffusion_pytorch_model-00002-of-00003.safetensors", dir);
    CHECK_INT(rename(shard, test_tmp_path("moved.safetensors")), 0);
    CHECK(model_dir_open_weights(dir) == NULL);
    fprintf(stderr, "    %s\n", err_get());
    CHECK_CONTAINS(err_get(), "diffusion_pytorch_model-00002-of-00003.safetensors");
    CHECK_CONTAINS(err_get(), "diffusion_pytorch_model.safetensors.index.json");
    CHECK_INT(rename(test_tmp_path("moved.safetensors"), shard), 0);
    struct st_set *set = model_dir_open_weights(dir);
    CHECK(set != NULL);
    st_set_close(set);

    /* A tensor mapped to a file that does not exist. */
    const char *sub = subdir("bad");
    CHECK_INT(model_dir_write_weights(sub, MODEL_DIR_DIFFUSERS_BASE, s.t, N_TENSORS, 100), 0);
    char index_path[4096];
    snprintf(index_path, sizeof index_path, "%s/diffusion_pytorch_model.safetensors.index.json", sub);
    json_t *index = json_read_file(index_path);
    json_object_set_new(json_object_get(index, "weight_map"), "ids",
                        json_string("diffusion_pytorch_model-00007-of-00009.safetensors"));
    CHECK_INT(json_write_file(index_path, index), 0);
    json_decref(index);
    CHECK(model_dir_open_weights(sub) == NULL);
    fprintf(stderr, "    %s\n", err_get());
    CHECK_CONTAINS(err_get(), "diffusion_pytorch_model-00007-of-00009.safetensors");
}

TEST(config_json_carries_the_class_and_version)
{
    const char *dir = test_tmpdir();
    json_t *cfg = json_pack("{s:i, s:s}", "num_layers", 2, "_class_name", "Other");
    CHECK_INT(model_dir_write_config(dir, "DiTTransformer2DModel", cfg), 0);
    json_decref(cfg);
    json_t *j = model_dir_read_config(dir, "DiTTransformer2DModel");
    CHECK(j != NULL);
    CHECK_STR(json_string_value(json_object_get(j, "_class_name")), "DiTTransformer2DModel");
    CHECK_STR(json_string_value(json_object_get(j, "_diffusers_version")), MODEL_DIR_DIFFUSERS_VERSION);
    CHECK_INT(json_integer_value(json_object_get(j, "num_layers")), 2);
    json_decref(j);
    /* An existing version is kept (a config read from elsewhere). */
    cfg = json_pack("{s:s}", "_diffusers_version", "0.28.2");
    CHECK_INT(model_dir_write_config(dir, "AutoencoderKL", cfg), 0);
    json_decref(cfg);
    j = model_dir_read_config(dir, NULL);
    CHECK_STR(json_string_value(json_object_get(j, "_diffusers_version")), "0.28.2");
    json_decref(j);
    CHECK(model_dir_read_config(dir, "DiTTransformer2DModel") == NULL);
    CHECK_CONTAINS(err_get(), "_class_name is 'AutoencoderKL', not DiTTransformer2DModel");
    CHECK(model_dir_read_config(test_tmp_path("none"), NULL) == NULL);
    CHECK_CONTAINS(err_get(), "none/config.json");
}

TEST(model_index_finds_a_components_folder_and_class)
{
    const char *dir = test_tmpdir();
    struct model_component c;
    CHECK(model_index_component(dir, "transformer", &c) != 0);
    CHECK_CONTAINS(err_get(), "model_index.json");
    write_text(dir, "model_index.json",
               "{\"_class_name\": \"DiTPipeline\", \"_diffusers_version\": \"0.31.0\",\n"
               " \"id2label\": {\"0\": \"tench\"},\n"
               " \"scheduler\": [\"diffusers\", \"KarrasDiffusionSchedulers\"],\n"
               " \"text_encoder\": [null, null],\n"
               " \"transformer\": [\"diffusers\", \"DiTTransformer2DModel\"],\n"
               " \"vae\": [\"diffusers\", \"AutoencoderKL\"]}\n");
    subdir("transformer");
    subdir("vae");
    CHECK_INT(model_index_component(dir, "transformer", &c), 0);
    CHECK_STR(c.library, "diffusers");
    CHECK_STR(c.class_name, "DiTTransformer2DModel");
    char want[4096];
    snprintf(want, sizeof want, "%s/transformer", dir);
    CHECK_STR(c.folder, want);
    model_component_free(&c);
    CHECK_INT(model_index_component(dir, "vae", &c), 0);
    CHECK_STR(c.class_name, "AutoencoderKL");
    model_component_free(&c);
    CHECK(model_index_component(dir, "scheduler", &c) != 0);
    CHECK_CONTAINS(err_get(), "has no folder");
    CHECK(model_index_component(dir, "text_encoder", &c) != 0);
    CHECK_CONTAINS(err_get(), "[null, null]");
    CHECK(model_index_component(dir, "unet", &c) != 0);
    CHECK_CONTAINS(err_get(), "no component 'unet'");
    CHECK(model_index_component(dir, "_class_name", &c) != 0);
    CHECK(model_index_component(dir, "id2label", &c) != 0);
    CHECK_CONTAINS(err_get(), "not [library, class]");
    CHECK(c.folder == NULL && c.class_name == NULL);
}

static struct dit_config tiny(void)
{
    struct dit_config c = {
        .input_size = 8, .patch_size = 2, .in_channels = 4, .hidden_size = 32, .depth = 2,
        .num_heads = 4, .mlp_ratio = 4.0f, .num_classes = 10, .class_dropout_prob = 0.1f,
        .learn_sigma = 1, .norm_eps = 1e-6f, .mlp_norm_eps = 1e-5f, .freq_shift = 1.0f,
    };
    return c;
}

/* dit_save_dir writes a diffusers model directory; dit_load_dir reads it
 * back, sharded too, and through a pipeline's model_index.json. */
TEST(dit_model_dir_round_trips_single_sharded_and_in_a_pipeline)
{
    struct dit_config cfg = tiny(), got;
    int64_t n = dit_param_count(&cfg);
    float *p = malloc((size_t)n * sizeof *p), *q = NULL;
    for (int64_t i = 0; i < n; i++)
        p[i] = (float)((i * 7919) % 1000) / 1000.0f - 0.5f;
    const char *dir = subdir("model");
    CHECK_INT(dit_save_dir(&cfg, p, dir), 0);
    CHECK(exists(dir, "diffusion_pytorch_model.safetensors"));
    CHECK(exists(dir, "dit.json"));
    json_t *c = model_dir_read_config(dir, DIT_DIFFUSERS_CLASS);
    CHECK(c != NULL);
    CHECK_STR(json_string_value(json_object_get(c, "_diffusers_version")), MODEL_DIR_DIFFUSERS_VERSION);
    CHECK_INT(json_integer_value(json_object_get(c, "num_layers")), 2);
    json_decref(c);
    CHECK_INT(dit_load_dir(dir, &got, &q), 0);
    CHECK(memcmp(&got, &cfg, sizeof cfg) == 0);
    CHECK(q && memcmp(p, q, (size_t)n * sizeof *p) == 0);
    free(q);

    /* The same weights as shards, with only diffusers' config.json. */
    const char *sh = subdir("sharded");
    struct st_set *set = model_dir_open_weights(dir);
    CHECK(set != NULL);
    struct model_tensor *t = calloc(set ? set->n_tensors : 1, sizeof *t);
    for (size_t i = 0; set && i < set->n_tensors; i++) {
        const struct st_tensor *s = st_set_tensor(set, i, NULL);
        t[i] = (struct model_tensor){s->name, s->dtype, s->ndim, {0}, s->data};
        memcpy(t[i].shape, s->shape, sizeof t[i].shape);
    }
    CHECK_INT(model_dir_write_weights(sh, MODEL_DIR_DIFFUSERS_BASE, t, set ? set->n_tensors : 0, 20000), 0);
    free(t);
    st_set_close(set);
    c = model_dir_read_config(dir, NULL);
    CHECK_INT(model_dir_write_config(sh, DIT_DIFFUSERS_CLASS, c), 0);
    json_decref(c);
    CHECK(exists(sh, "diffusion_pytorch_model.safetensors.index.json"));
    CHECK_INT(dit_load_dir(sh, &got, &q), 0);
    CHECK(q && memcmp(p, q, (size_t)n * sizeof *p) == 0);
    CHECK_INT(got.depth, 2);
    CHECK_NEAR(got.freq_shift, 1.0, 0); /* diffusers' numerics, from config.json */
    free(q);

    /* A pipeline folder: the DiT is its transformer. */
    const char *pipe = subdir("pipe");
    char tdir[4096];
    snprintf(tdir, sizeof tdir, "%s/transformer", pipe);
    CHECK_INT(mkdir(tdir, 0777), 0);
    CHECK_INT(dit_save_dir(&cfg, p, tdir), 0);
    CHECK(dit_load_dir(pipe, &got, &q) != 0);
    CHECK_CONTAINS(err_get(), "pipe/config.json");
    write_text(pipe, "model_index.json",
               "{\"_class_name\": \"DiTPipeline\", \"transformer\": [\"diffusers\", \"DiTTransformer2DModel\"]}");
    q = NULL;
    CHECK_INT(dit_load_dir(pipe, &got, &q), 0);
    CHECK(q && memcmp(p, q, (size_t)n * sizeof *p) == 0);
    free(q);
    free(p);
}
