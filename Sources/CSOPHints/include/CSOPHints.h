#ifndef CSOPHINTS_H
#define CSOPHINTS_H

/// Asks the CPU to bring the cache line holding `address` into its caches, for reading, without
/// waiting for it (x86 `prefetcht0`, ARM `prfm pldl1keep`). A hint only: any address is safe,
/// nothing is read and no fault is raised, so a stale or wrong address costs nothing but the
/// instruction. Swift has no such primitive; this inline function compiles to the instruction
/// in the caller.
static inline __attribute__((always_inline)) void sop_prefetch(const void *address) {
    __builtin_prefetch(address, 0, 3);
}

/// `sop_prefetch` for every cache line that holds any of the `length` bytes at `address`
/// (lines of 64 bytes, the size on x86-64 and on the ARM cores Swift runs on).
static inline __attribute__((always_inline)) void sop_prefetch_range(const void *address, long length) {
    const char *line = (const char *)((unsigned long)address & ~63UL);
    const char *end = (const char *)address + length;
    for (; line < end; line += 64) __builtin_prefetch(line, 0, 3);
}

#endif
