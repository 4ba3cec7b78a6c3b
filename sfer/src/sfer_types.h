/* Item types of the kernels that C lacks: half floats as their bits, complex as pairs. */
#ifndef SFER_TYPES_H
#define SFER_TYPES_H

#include <stdint.h>

typedef struct { uint16_t bits; } sfer_f16;
typedef struct { uint16_t bits; } sfer_bf16;
typedef struct { float re, im; } sfer_c64;
typedef struct { double re, im; } sfer_c128;

#endif  /* SFER_TYPES_H */
