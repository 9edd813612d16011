// CRC-32C with the CPU's instructions: SSE 4.2 `crc32` on x86_64, the CRC32 extension's
// `crc32c*` on aarch64. The functions are compiled for those extensions with target
// attributes only, so the rest of the binary still runs on CPUs without them; callers check
// `sop_crc32c_hw_available()` first (the Swift side falls back to slicing-by-8 tables).

#include "CSOPCRC32C.h"

#include <string.h>

#if defined(__x86_64__)

#include <nmmintrin.h>

int sop_crc32c_hw_available(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("sse4.2") ? 1 : 0;
}

__attribute__((target("sse4.2")))
uint32_t sop_crc32c_hw(uint32_t seed, const void *bytes, size_t length) {
    const unsigned char *p = (const unsigned char *)bytes;
    uint64_t crc = (uint32_t)~seed;
    while (length >= 8) {
        uint64_t word;
        memcpy(&word, p, 8);  // unaligned load
        crc = _mm_crc32_u64(crc, word);
        p += 8;
        length -= 8;
    }
    uint32_t c = (uint32_t)crc;
    while (length > 0) {
        c = _mm_crc32_u8(c, *p);
        p += 1;
        length -= 1;
    }
    return ~c;
}

#elif defined(__aarch64__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__

#include <arm_acle.h>

#if defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_CRC32
#define HWCAP_CRC32 (1 << 7)
#endif
#elif defined(__APPLE__)
#include <sys/sysctl.h>
#endif

int sop_crc32c_hw_available(void) {
#if defined(__linux__)
    return (getauxval(AT_HWCAP) & HWCAP_CRC32) ? 1 : 0;
#elif defined(__APPLE__)
    int value = 0;
    size_t size = sizeof(value);
    if (sysctlbyname("hw.optional.armv8_crc32", &value, &size, NULL, 0) != 0) return 0;
    return value ? 1 : 0;
#else
    return 0;
#endif
}

__attribute__((target("crc")))
uint32_t sop_crc32c_hw(uint32_t seed, const void *bytes, size_t length) {
    const unsigned char *p = (const unsigned char *)bytes;
    uint32_t crc = ~seed;
    while (length >= 8) {
        uint64_t word;
        memcpy(&word, p, 8);  // unaligned load
        crc = __crc32cd(crc, word);
        p += 8;
        length -= 8;
    }
    while (length > 0) {
        crc = __crc32cb(crc, *p);
        p += 1;
        length -= 1;
    }
    return ~crc;
}

#else

int sop_crc32c_hw_available(void) { return 0; }

uint32_t sop_crc32c_hw(uint32_t seed, const void *bytes, size_t length) {
    (void)bytes;
    (void)length;
    return seed;  // never called: sop_crc32c_hw_available() is 0
}

#endif
