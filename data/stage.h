/* What the data stages' run calls return: index_run (data/index_run.h),
 * bucket_run (data/bucket_run.h) and precompute_run (data/precompute.h).
 *
 * A stage reports as it goes, on stderr through libcommon's log: each
 * rejected record with its source and reason, the closing summary, and the
 * verdict of --strict. What it cannot report itself is the error that
 * stopped it, which it leaves in err_get() for the caller: a tool prints it
 * and exits 1 (or 2 for a configuration error); dit-train would print it
 * and stop before training. No stage exits or keeps global state, so one
 * process may run index, bucket and precompute one after another. */
#ifndef DIT_DATA_STAGE_H
#define DIT_DATA_STAGE_H

enum stage_status {
    STAGE_DONE = 0,        /* done; the outputs are committed */
    STAGE_FAILED = 1,      /* ran to the end but failed (--strict saw rejections, or an
                            * input broke part-way): already reported; which outputs
                            * were still written is documented per stage */
    STAGE_ERROR = -1,      /* stopped by an error: err_get() says why; outputs not
                            * committed by then are dropped (never left half-written
                            * under their final names) */
    STAGE_BAD_CONFIG = -2, /* the configuration cannot run (a contradiction, an
                            * unknown name): err_get() says why; nothing was written */
};

#endif
