#include "nn/precision.h"
#include "libcommon/error.h"

#include <string.h>

int kdtype_for_compute(const char *request, enum device_kind device, enum kdtype *out)
{
    enum kdtype dt;
    if (!request || strcmp(request, "bf16") == 0)
        dt = KDT_BF16;
    else if (strcmp(request, "fp16") == 0)
        dt = KDT_F16;
    else if (strcmp(request, "no") == 0 || strcmp(request, "fp32") == 0)
        dt = KDT_F32;
    else {
        err_set("'%s' is not no (fp32), bf16 or fp16", request);
        return -1;
    }
    if (device == DEVICE_CPU) {
        *out = KDT_F32;
        return request && dt != KDT_F32;
    }
    *out = dt;
    return 0;
}
