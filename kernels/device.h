/* Which backend runs the ops: the CPU (the reference) or a CUDA GPU.
 *
 * The CUDA backend is linked in when the build found nvcc; a binary built
 * with it still runs on machines without a GPU or a driver and then reports
 * that no GPU is visible. */
#ifndef DIT_DEVICE_H
#define DIT_DEVICE_H

enum device_kind {
    DEVICE_CPU = 0,
    DEVICE_CUDA = 1,
};

/* Number of CUDA devices visible to this process; 0 without CUDA support,
 * a driver or a GPU. */
int device_cuda_count(void);

/* Resolves --device: "cpu", "cuda" (fails with err_set() when no GPU is
 * visible) or "auto" (a GPU if one is visible, else the CPU). Returns 0. */
int device_resolve(const char *request, enum device_kind *out);

/* device_resolve() for a tool: logs the choice for "auto" on stderr and
 * exits 1 when "cuda" was asked for and none is visible. */
enum device_kind device_select(const char *request);

const char *device_name(enum device_kind kind);

#endif
