/* Private to Caffe's file formats (caffe_io.h is the API): what caffe_io.c and caffe_wire.c
 * share. Nothing outside core/format/ includes this header. */
#ifndef DD_CAFFE_IO_INTERNAL_H
#define DD_CAFFE_IO_INTERNAL_H

#include <stddef.h>

/* Appends printf-style to `buf` (of `n` bytes, NUL-terminated) at *pos and advances *pos,
 * clamping at the end of the buffer: a message that does not fit is cut off. Defined in
 * caffe_wire.c. */
void dd__appendf(char *buf, size_t n, size_t *pos, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
