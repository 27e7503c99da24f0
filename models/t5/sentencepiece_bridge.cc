// The extern "C" shim over sentencepiece_processor.h (see the header).
#include "models/t5/sentencepiece_bridge.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

struct spm_bridge {
    sentencepiece::SentencePieceProcessor sp;
};

static void bridge_error(char *err, size_t errlen, const char *what)
{
    if (err && errlen)
        std::snprintf(err, errlen, "%s", what);
}

static int bridge_status(const sentencepiece::util::Status &s, char *err, size_t errlen)
{
    if (s.ok())
        return 0;
    bridge_error(err, errlen, s.error_message());
    return -1;
}

extern "C" struct spm_bridge *spm_bridge_load(const void *proto, size_t size, char *err, size_t errlen)
{
    try {
        auto *b = new spm_bridge;
        std::string_view bytes(static_cast<const char *>(proto), size);
        if (bridge_status(b->sp.LoadFromSerializedProto(bytes), err, errlen) != 0) {
            delete b;
            return nullptr;
        }
        return b;
    } catch (const std::exception &e) {
        bridge_error(err, errlen, e.what());
    } catch (...) {
        bridge_error(err, errlen, "sentencepiece: unknown exception");
    }
    return nullptr;
}

extern "C" void spm_bridge_free(struct spm_bridge *b)
{
    delete b;
}

extern "C" int spm_bridge_piece_id(const struct spm_bridge *b, const char *piece, size_t len)
{
    try {
        std::string_view p(piece, len);
        int id = b->sp.PieceToId(p);
        // PieceToId answers the unknown id for a piece it lacks.
        if (id < 0 || b->sp.IdToPiece(id) != p)
            return -1;
        return id;
    } catch (...) {
        return -1;
    }
}

extern "C" int spm_bridge_encode_ids(const struct spm_bridge *b, const char *text, size_t len, int **ids,
                                     size_t *n, char *err, size_t errlen)
{
    *ids = nullptr;
    *n = 0;
    try {
        std::vector<int> v;
        if (bridge_status(b->sp.Encode(std::string_view(text, len), &v), err, errlen) != 0)
            return -1;
        if (v.empty())
            return 0;
        int *out = static_cast<int *>(std::malloc(v.size() * sizeof *out));
        if (!out) {
            bridge_error(err, errlen, "out of memory");
            return -1;
        }
        std::memcpy(out, v.data(), v.size() * sizeof *out);
        *ids = out;
        *n = v.size();
        return 0;
    } catch (const std::exception &e) {
        bridge_error(err, errlen, e.what());
    } catch (...) {
        bridge_error(err, errlen, "sentencepiece: unknown exception");
    }
    return -1;
}

extern "C" int spm_bridge_encode_joined(const struct spm_bridge *b, const char *text, size_t len, char **out,
                                        size_t *out_len, char *err, size_t errlen)
{
    *out = nullptr;
    *out_len = 0;
    try {
        std::vector<std::string> pieces;
        if (bridge_status(b->sp.Encode(std::string_view(text, len), &pieces), err, errlen) != 0)
            return -1;
        size_t total = 0;
        for (const auto &p : pieces)
            total += p.size();
        char *s = static_cast<char *>(std::malloc(total + 1));
        if (!s) {
            bridge_error(err, errlen, "out of memory");
            return -1;
        }
        size_t at = 0;
        for (const auto &p : pieces) {
            std::memcpy(s + at, p.data(), p.size());
            at += p.size();
        }
        s[at] = '\0';
        *out = s;
        *out_len = at;
        return 0;
    } catch (const std::exception &e) {
        bridge_error(err, errlen, e.what());
    } catch (...) {
        bridge_error(err, errlen, "sentencepiece: unknown exception");
    }
    return -1;
}

extern "C" int spm_bridge_train(const char *const *keys, const char *const *values, size_t n, char *err,
                                size_t errlen)
{
    try {
        std::unordered_map<std::string, std::string> kwargs;
        for (size_t i = 0; i < n; i++)
            kwargs[keys[i]] = values[i];
        return bridge_status(sentencepiece::SentencePieceTrainer::Train(kwargs), err, errlen);
    } catch (const std::exception &e) {
        bridge_error(err, errlen, e.what());
        return -1;
    }
}
