/* TensorBoard event files: the training logs TensorBoard reads.
 *
 * A file is a sequence of TFRecords (uint64 length, masked CRC-32C of the
 * length, data, masked CRC-32C of the data; little endian), each holding one
 * serialized tensorboard.Event protobuf. The first event carries the file
 * version "brain.Event:2"; the others carry scalars (simple_value) or PNG
 * images. The bytes are those tensorboard's own EventFileWriter produces for
 * the same events (tests/fixtures/tfevents/golden.tfevents).
 *
 * Unlike other outputs, an event file is appended to while training runs and
 * TensorBoard reads it meanwhile, so it is not written to a temporary name:
 * a crash can leave a truncated last record, which readers tolerate. */
#ifndef DIT_TFEVENTS_H
#define DIT_TFEVENTS_H

#include <stddef.h>
#include <stdint.h>

struct tfevents;

/* Creates DIR (and its parents) if missing, then
 * DIR/events.out.tfevents.<unix seconds>.<host>.<pid>.<n> (tensorboard's own
 * naming: <n> counts the files this process opened, so two writers never
 * collide), and writes the file_version event stamped with the current time.
 * NULL with err_set(). */
struct tfevents *tfevents_open(const char *dir);
/* The same, with suffix appended to the name verbatim (tensorboard's
 * filename_suffix, e.g. ".rank0"); suffix may be NULL. */
struct tfevents *tfevents_open_suffix(const char *dir, const char *suffix);
/* Creates exactly path (which must not exist yet) and stamps the
 * file_version event with wall_time: for reproducible files and tests. */
struct tfevents *tfevents_open_path(const char *path, double wall_time);
/* The file being written. */
const char *tfevents_path(const struct tfevents *w);

/* wall_time is in seconds since the epoch (tfevents_now() gives it).
 * Each call appends one event; 0, or -1 with err_set("PATH: reason"). After a
 * failed write the file may end in a partial record, so every later call
 * fails too. */
int tfevents_scalar(struct tfevents *w, const char *tag, int64_t step, double wall_time, float value);
/* png holds png_size bytes of a PNG image of width x height pixels with
 * channels 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA). */
int tfevents_image(struct tfevents *w, const char *tag, int64_t step, double wall_time, int width, int height,
                   int channels, const void *png, size_t png_size);
/* fflush + fsync: TensorBoard reads the file while training runs. */
int tfevents_flush(struct tfevents *w);
/* Flushes, closes and frees, even on failure; NULL is a no-op returning 0. */
int tfevents_close(struct tfevents *w);

/* Seconds since the epoch, with sub-second resolution, as TensorBoard wants. */
double tfevents_now(void);

/* Reading back, for tests and dit-inspect. */
struct tfevents_image {
    const char *tag;
    int64_t step;
    double wall_time;
    int width, height, channels; /* channels as given to tfevents_image() */
    const void *png;             /* valid during the callback only */
    size_t png_size;
};

/* Calls scalar() for each simple_value and image() for each image, in file
 * order; either may be NULL. Other events and values are skipped. Returns:
 *   0  every record was read;
 *   1  the last record is truncated (a writer still running, or one that
 *      crashed): the records before it were delivered, and err_get() says
 *      "FILE: record N: truncated last record (...)";
 *  -1  a bad length, CRC or protobuf, or an I/O error, with
 *      err_set("FILE: record N: reason"); records before it were delivered.
 * Records are numbered from 1 (the file_version event). */
int tfevents_read(const char *path, void (*scalar)(void *ctx, const char *tag, int64_t step, float value),
                  void (*image)(void *ctx, const struct tfevents_image *img), void *ctx);
/* tfevents_read() with scalars only; the same return values. */
int tfevents_read_scalars(const char *path, void (*fn)(void *ctx, const char *tag, int64_t step, float value),
                          void *ctx);

/* The masked CRC-32C of TFRecord framing (exposed for tests). */
uint32_t tfevents_masked_crc(const void *data, size_t size);

#endif
