#ifndef CSOPCRC32C_H
#define CSOPCRC32C_H

#include <stddef.h>
#include <stdint.h>

/// Whether this CPU has CRC-32C instructions that `sop_crc32c_hw` uses: SSE 4.2 on x86_64,
/// the CRC32 extension on aarch64. Always 0 on other architectures.
int sop_crc32c_hw_available(void);

/// The CRC-32C (Castagnoli) of `length` bytes at `bytes`, continuing from `seed` (the checksum of
/// the bytes before them; 0 to start), computed with the CPU's CRC-32C instructions.
/// Call only when `sop_crc32c_hw_available()` returned nonzero. `bytes` may be NULL when
/// `length` is 0.
uint32_t sop_crc32c_hw(uint32_t seed, const void *bytes, size_t length);

#endif
