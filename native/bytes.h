// Little-endian loads and stores of the wire's integers, whatever the host's byte order, and tests of
// a page's bytes.
#pragma once
#include <cstdint>
#include <cstring>

namespace pagewire {

template <typename T>
inline T FromLittleEndian(T v) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  if constexpr (sizeof(T) == 2) return __builtin_bswap16(v);
  if constexpr (sizeof(T) == 4) return __builtin_bswap32(v);
  if constexpr (sizeof(T) == 8) return __builtin_bswap64(v);
#endif
  return v;
}

template <typename T>
inline T LoadLE(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return FromLittleEndian(v);
}

template <typename T>
inline void StoreLE(uint8_t* p, T v) {
  v = FromLittleEndian(v);  // the swap is its own inverse
  std::memcpy(p, &v, sizeof(T));
}

inline uint16_t Load16(const uint8_t* p) { return LoadLE<uint16_t>(p); }
inline uint32_t Load32(const uint8_t* p) { return LoadLE<uint32_t>(p); }
inline uint64_t Load64(const uint8_t* p) { return LoadLE<uint64_t>(p); }
inline void Store32(uint8_t* p, uint32_t v) { StoreLE(p, v); }
inline void Store64(uint8_t* p, uint64_t v) { StoreLE(p, v); }

// The encoder's test for pages LZ4 is not tried on (docs/PROTOCOL.md section 4): n = min(64, size)
// bytes sampled at k * floor(size / n); more than 3/4 of them distinct looks like random data, which
// LZ4 cannot shrink by the 1/8 it must save. About 64 loads, against a whole failed compression.
inline bool LooksIncompressible(const uint8_t* page, size_t size) {
  const size_t n = size < 64 ? size : 64;
  if (n == 0) return false;
  const size_t stride = size / n;
  uint64_t seen[4] = {0, 0, 0, 0};
  size_t distinct = 0;
  for (size_t k = 0; k < n; ++k) {
    const uint8_t b = page[k * stride];
    const uint64_t bit = uint64_t{1} << (b & 63);
    if ((seen[b >> 6] & bit) == 0) {
      seen[b >> 6] |= bit;
      ++distinct;
    }
  }
  return 4 * distinct > 3 * n;
}

// True when all n bytes are zero. 64-byte chunks of eight OR-reduced 64-bit loads, leaving at the
// first chunk that is not zero.
inline bool IsZero(const uint8_t* p, uint64_t n) {
  uint64_t i = 0;
  for (; n - i >= 64; i += 64) {
    uint64_t w[8];
    std::memcpy(w, p + i, 64);
    if ((w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7]) != 0) return false;
  }
  for (; n - i >= 8; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    if (w != 0) return false;
  }
  for (; i < n; ++i) {
    if (p[i] != 0) return false;
  }
  return true;
}

}  // namespace pagewire
