/* libFuzzer target: whole torch.save files (zip, then pickle) through
 * torch_pt_read_buffer. Whatever it accepts must be a safetensors buffer
 * that st_open_buffer accepts too. See tests/fuzz/README.md. */
#include "formats/torch_pt.h"
#include "libcommon/safetensors.h"

#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    void *bytes = NULL;
    size_t len = 0;
    int skipped = 0;
    if (torch_pt_read_buffer("fuzz.pt", data, size, &bytes, &len, &skipped) != 0)
        return 0;
    struct st_file *f = st_open_buffer("fuzz.pt", bytes, len);
    if (!f)
        abort(); /* the reader built a file the safetensors reader refuses */
    st_close(f);
    free(bytes);
    return 0;
}
