/* UTF-8 validation, strict as RFC 3629: no overlong forms, no surrogates,
 * nothing above U+10FFFF. */
#ifndef DIT_UTF8_H
#define DIT_UTF8_H

#include <stddef.h>

/* Returns the byte offset of the first invalid sequence, or -1 when s[0..n)
 * is valid UTF-8. */
long utf8_invalid_at(const char *s, size_t n);

#endif
