// XXH64, written from the public specification (xxHash "XXH64 algorithm description").
// Input words are read little-endian regardless of host byte order.
#include "xxhash64.h"

#include <cstring>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define PAGEWIRE_AVX512_PAGES 1
#endif

#include "bytes.h"

namespace pagewire {
namespace {

constexpr uint64_t kP1 = 0x9E3779B185EBCA87ULL;
constexpr uint64_t kP2 = 0xC2B2AE3D27D4EB4FULL;
constexpr uint64_t kP3 = 0x165667B19E3779F9ULL;
constexpr uint64_t kP4 = 0x85EBCA77C2B2AE63ULL;
constexpr uint64_t kP5 = 0x27D4EB2F165667C5ULL;

inline uint64_t Rotl(uint64_t x, unsigned r) { return (x << r) | (x >> (64 - r)); }

inline uint64_t Round(uint64_t acc, uint64_t lane) {
  acc += lane * kP2;
  acc = Rotl(acc, 31);
  return acc * kP1;
}

inline uint64_t Merge(uint64_t h, uint64_t acc) {
  h ^= Round(0, acc);
  return h * kP1 + kP4;
}

inline uint64_t Converge(uint64_t v1, uint64_t v2, uint64_t v3, uint64_t v4) {
  uint64_t h = Rotl(v1, 1) + Rotl(v2, 7) + Rotl(v3, 12) + Rotl(v4, 18);
  h = Merge(h, v1);
  h = Merge(h, v2);
  h = Merge(h, v3);
  h = Merge(h, v4);
  return h;
}

inline uint64_t Avalanche(uint64_t h) {
  h ^= h >> 33;
  h *= kP2;
  h ^= h >> 29;
  h *= kP3;
  h ^= h >> 32;
  return h;
}

// The tail (< 32 bytes) and the final avalanche.
inline uint64_t Finish(uint64_t h, const unsigned char* p, const unsigned char* end) {
  while (end - p >= 8) {
    h ^= Round(0, Load64(p));
    h = Rotl(h, 27) * kP1 + kP4;
    p += 8;
  }
  if (end - p >= 4) {
    h ^= static_cast<uint64_t>(Load32(p)) * kP1;
    h = Rotl(h, 23) * kP2 + kP3;
    p += 4;
  }
  while (p < end) {
    h ^= static_cast<uint64_t>(*p) * kP5;
    h = Rotl(h, 11) * kP1;
    ++p;
  }
  return Avalanche(h);
}

}  // namespace

uint64_t Xxh64(const void* data, size_t len, uint64_t seed) {
  const unsigned char* p = static_cast<const unsigned char*>(data);
  const unsigned char* const end = p + len;
  uint64_t h;

  if (len >= 32) {
    uint64_t v1 = seed + kP1 + kP2;
    uint64_t v2 = seed + kP2;
    uint64_t v3 = seed;
    uint64_t v4 = seed - kP1;
    const unsigned char* const limit = end - 32;
    do {
      v1 = Round(v1, Load64(p));
      v2 = Round(v2, Load64(p + 8));
      v3 = Round(v3, Load64(p + 16));
      v4 = Round(v4, Load64(p + 24));
      p += 32;
    } while (p <= limit);
    h = Converge(v1, v2, v3, v4);
  } else {
    h = seed + kP5;
  }

  h += static_cast<uint64_t>(len);

  return Finish(h, p, end);
}

uint64_t Xxh64Copy(void* dst, const void* src, size_t len, uint64_t seed) {
  unsigned char* d = static_cast<unsigned char*>(dst);
  const unsigned char* s = static_cast<const unsigned char*>(src);
  if (len < 32) {
    if (len > 0) std::memcpy(d, s, len);
    return Xxh64(d, len, seed);
  }
  // Chunks are a multiple of the 32-byte stripe: copy a chunk, then consume its stripes from dst
  // while it is still in L1.
  constexpr size_t kChunk = 8192;
  uint64_t v1 = seed + kP1 + kP2;
  uint64_t v2 = seed + kP2;
  uint64_t v3 = seed;
  uint64_t v4 = seed - kP1;
  const size_t stripesBytes = len & ~static_cast<size_t>(31);
  size_t done = 0;
  while (done < stripesBytes) {
    size_t n = stripesBytes - done < kChunk ? stripesBytes - done : kChunk;
    std::memcpy(d + done, s + done, n);
    for (const unsigned char* p = d + done; p < d + done + n; p += 32) {
      v1 = Round(v1, Load64(p));
      v2 = Round(v2, Load64(p + 8));
      v3 = Round(v3, Load64(p + 16));
      v4 = Round(v4, Load64(p + 24));
    }
    done += n;
  }
  if (len > done) std::memcpy(d + done, s + done, len - done);
  uint64_t h = Converge(v1, v2, v3, v4) + static_cast<uint64_t>(len);
  const unsigned char* p = d + done;
  const unsigned char* const end = d + len;
  return Finish(h, p, end);
}

uint64_t Xxh64Zeros(size_t len, uint64_t seed) {
  // Same steps as Xxh64 with every input lane equal to zero.
  size_t rest = len;
  uint64_t h;
  if (rest >= 32) {
    uint64_t v1 = seed + kP1 + kP2;
    uint64_t v2 = seed + kP2;
    uint64_t v3 = seed;
    uint64_t v4 = seed - kP1;
    do {
      v1 = Round(v1, 0);
      v2 = Round(v2, 0);
      v3 = Round(v3, 0);
      v4 = Round(v4, 0);
      rest -= 32;
    } while (rest >= 32);
    h = Converge(v1, v2, v3, v4);
  } else {
    h = seed + kP5;
  }
  h += static_cast<uint64_t>(len);
  while (rest >= 8) {
    h ^= Round(0, 0);
    h = Rotl(h, 27) * kP1 + kP4;
    rest -= 8;
  }
  if (rest >= 4) {
    h = Rotl(h, 23) * kP2 + kP3;  // h ^= 0 * P1
    rest -= 4;
  }
  while (rest > 0) {
    h = Rotl(h, 11) * kP1;  // h ^= 0 * P5
    --rest;
  }
  return Avalanche(h);
}

#if PAGEWIRE_AVX512_PAGES
namespace {

// Eight pages at once, the same XXH64 as Xxh64: each 512-bit accumulator holds the four lanes (v1..v4)
// of two pages, so one vpmullq does eight of the 64-bit multiplies a scalar core does one at a time, and
// four independent accumulators hide the multiplier's latency. Pages of a multiple of 32 bytes.
__attribute__((target("avx512f,avx512dq,avx512vl"))) inline __m512i LoadPair(const unsigned char* a, const unsigned char* b) {
  return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a))),
                            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b)), 1);
}

__attribute__((target("avx512f,avx512dq,avx512vl"))) inline __m512i RoundPair(__m512i acc, __m512i in, __m512i p1, __m512i p2) {
  return _mm512_mullo_epi64(_mm512_rol_epi64(_mm512_add_epi64(acc, _mm512_mullo_epi64(in, p2)), 31), p1);
}

constexpr int kPagesAtOnce = 8;

__attribute__((target("avx512f,avx512dq,avx512vl"))) void Xxh64Eight(const unsigned char* first, size_t pageSize,
                                                                        uint64_t out[kPagesAtOnce]) {
  const __m512i p1 = _mm512_set1_epi64(static_cast<long long>(kP1));
  const __m512i p2 = _mm512_set1_epi64(static_cast<long long>(kP2));
  const __m512i init = _mm512_set_epi64(static_cast<long long>(0 - kP1), 0, static_cast<long long>(kP2),
                                        static_cast<long long>(kP1 + kP2), static_cast<long long>(0 - kP1), 0,
                                        static_cast<long long>(kP2), static_cast<long long>(kP1 + kP2));
  __m512i acc[kPagesAtOnce / 2] = {init, init, init, init};
  for (size_t off = 0; off < pageSize; off += 32) {
    for (int k = 0; k < kPagesAtOnce / 2; ++k) {
      const unsigned char* a = first + (2 * k) * pageSize + off;
      acc[k] = RoundPair(acc[k], LoadPair(a, a + pageSize), p1, p2);
    }
  }
  alignas(64) uint64_t lanes[4 * kPagesAtOnce];
  for (int k = 0; k < kPagesAtOnce / 2; ++k) _mm512_store_si512(reinterpret_cast<__m512i*>(lanes + 8 * k), acc[k]);
  for (int i = 0; i < kPagesAtOnce; ++i) {
    const uint64_t* v = lanes + 4 * i;
    out[i] = Avalanche(Converge(v[0], v[1], v[2], v[3]) + static_cast<uint64_t>(pageSize));
  }
}

bool HasAvx512Pages() {
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
                          __builtin_cpu_supports("avx512vl");
  return has;
}

}  // namespace
#endif

void Xxh64Pages(const unsigned char* first, size_t pageSize, size_t count, uint64_t* out) {
  size_t i = 0;
#if PAGEWIRE_AVX512_PAGES
  if (pageSize % 32 == 0 && HasAvx512Pages()) {
    for (; i + kPagesAtOnce <= count; i += kPagesAtOnce) Xxh64Eight(first + i * pageSize, pageSize, out + i);
  }
#endif
  for (; i < count; ++i) out[i] = Xxh64(first + i * pageSize, pageSize);
}

}  // namespace pagewire
