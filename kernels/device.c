#include "kernels/device.h"
#include "kernels/backend.h"
#include "libcommon/error.h"
#include "libcommon/log.h"

#include <string.h>

int device_cuda_count(void)
{
    const struct kbackend *be = kbackend_for(DEVICE_CUDA);
    return be ? be->device_count() : 0;
}

const char *device_name(enum device_kind kind)
{
    return kind == DEVICE_CUDA ? "cuda" : "cpu";
}

int device_resolve(const char *request, enum device_kind *out)
{
    if (!request || strcmp(request, "auto") == 0) {
        *out = device_cuda_count() > 0 ? DEVICE_CUDA : DEVICE_CPU;
        return 0;
    }
    if (strcmp(request, "cpu") == 0) {
        *out = DEVICE_CPU;
        return 0;
    }
    if (strcmp(request, "cuda") == 0) {
        if (!kbackend_for(DEVICE_CUDA)) {
            err_set("--device cuda: this build has no CUDA backend (nvcc was not found at build "
                    "time)");
            return -1;
        }
        if (device_cuda_count() <= 0) {
            err_set("--device cuda: no CUDA GPU is visible to this process");
            return -1;
        }
        *out = DEVICE_CUDA;
        return 0;
    }
    err_set("--device: '%s' is not one of cpu, cuda, auto", request);
    return -1;
}

enum device_kind device_select(const char *request)
{
    enum device_kind kind;
    if (device_resolve(request, &kind) != 0)
        die(DIT_EXIT_FAILURE, "%s", err_get());
    if (!request || strcmp(request, "auto") == 0)
        log_info("device: %s (auto%s)", device_name(kind),
                 kind == DEVICE_CPU ? ": no CUDA GPU visible" : "");
    else
        log_debug("device: %s", device_name(kind));
    return kind;
}
