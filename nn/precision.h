/* Precision policy: which dtype the activations and compute weights take
 * for what a tool asks. The kernels take whatever dtype they are given;
 * choosing one is the model layer's business, so it lives here. */
#ifndef DIT_NN_PRECISION_H
#define DIT_NN_PRECISION_H

#include "kernels/kernels.h"

/* The compute dtype a tool asks for (--mixed-precision, --precision): NULL
 * means bf16 on CUDA; "no" and "fp32" mean f32, "bf16" and "fp16" the low
 * precisions. The CPU computes in f32 whatever is asked: then 1 is returned
 * when something else was asked for, for the tool to say so. -1 with
 * err_set() for another name. */
int kdtype_for_compute(const char *request, enum device_kind device, enum kdtype *out);

#endif
