// Device discovery for the CUDA backend. Kept free of any launch so that it
// is safe to call on machines without a driver: the runtime then reports an
// error, which means "no GPU".
#include <cuda_runtime.h>

extern "C" int cuda_device_count(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();  // clear the sticky error for later callers
        return 0;
    }
    return n;
}
