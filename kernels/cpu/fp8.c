/* fp8 weights widened on the CPU: f32 out (the CPU computes in f32). */
#include "kernels/cpu/cpu.h"
#include "libcommon/e4m3.h"

void cpu_fp8_rows_widen(float *out, const uint8_t *codes, const float *scale, int rows, int cols)
{
    const int64_t n = (int64_t)rows * cols;
#pragma omp parallel for schedule(static) if (n >= CPU_PARALLEL_MIN)
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            const int64_t i = (int64_t)r * cols + c;
            out[i] = e4m3_decode(codes[i]) * scale[r];
        }
}
