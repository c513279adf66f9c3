// Port of compressBlock from the lz4 npm package v0.6.5 (lib/binding.js), kept step for step: same
// hash, table, skip and bounds, so the output is identical. Comments name the JS variables.
#include "page_lz4.h"

#include <climits>
#include <cstring>

#include "bytes.h"
#include "lz4.h"

namespace pagewire {
namespace {

constexpr size_t kMinMatch = 4;
constexpr size_t kHashLog = 16;
constexpr size_t kHashShift = kMinMatch * 8 - kHashLog;
constexpr size_t kHashSize = size_t{1} << kHashLog;
constexpr size_t kMfLimit = 8 + kMinMatch;  // copyLength + minMatch
constexpr uint32_t kSkipStrength = 6;
constexpr size_t kMlMask = 15;
constexpr size_t kRunMask = 15;
constexpr uint32_t kHasher = 2654435761u;

// A literal or match length past the token's 15: 255s, then the rest (JS: `len > 254` loop).
inline size_t PutLength(uint8_t* dst, size_t dpos, size_t rest) {
  for (; rest > 254; rest -= 255) dst[dpos++] = 255;
  dst[dpos++] = static_cast<uint8_t>(rest);
  return dpos;
}

}  // namespace

Lz4Table::Lz4Table() : entries_(new uint32_t[kHashSize]()) {}

uint32_t Lz4Table::Begin(size_t len) {
  // Stored values of this page are base + 1 .. base + len; the next page's base is past them.
  if (static_cast<uint64_t>(base_) + len + 1 > UINT32_MAX) {
    std::memset(entries_.get(), 0, kHashSize * sizeof(uint32_t));
    base_ = 0;
  }
  const uint32_t base = base_;
  base_ += static_cast<uint32_t>(len + 1);
  return base;
}

size_t Lz4CompressPage(const uint8_t* src, size_t len, uint8_t* dst, Lz4Table& table) {
  // JS: inputs of maxInputSize or more throw; inputs of mfLimit bytes or fewer are not compressed.
  if (len >= kLz4MaxInput || len <= kMfLimit) return 0;
  const uint32_t base = table.Begin(len);
  uint32_t* hashTable = table.entries();

  size_t pos = 0, anchor = 0, dpos = 0;
  uint32_t findMatchAttempts = (1u << kSkipStrength) + 3;
  const size_t srcLength = len - kMfLimit;  // the last bytes stay literals

  while (pos + kMinMatch < srcLength) {
    const uint32_t sequence = Load32(src + pos);
    const uint32_t hash = (sequence * kHasher) >> kHashShift;  // Math.imul(seq, hasher) >>> hashShift
    const uint32_t stored = hashTable[hash];
    hashTable[hash] = base + static_cast<uint32_t>(pos) + 1;
    // JS: ref = hashTable[hash] - 1; no match if ref < 0, pos - ref >= 64 KiB, or other bytes.
    size_t ref = static_cast<size_t>(stored - base) - 1;
    if (stored <= base || pos - ref > 0xffff || Load32(src + ref) != sequence) {
      pos += findMatchAttempts++ >> kSkipStrength;  // step
      continue;
    }
    findMatchAttempts = (1u << kSkipStrength) + 3;

    const size_t literals = pos - anchor;
    const size_t offset = pos - ref;
    pos += kMinMatch;
    ref += kMinMatch;
    // Extend the match up to srcLength, 8 bytes at a time (ref < pos, so both loads are in bounds).
    const size_t matchStart = pos;
    for (;;) {
      if (srcLength - pos >= 8) {
        const uint64_t x = Load64(src + pos) ^ Load64(src + ref);
        if (x != 0) {
          pos += static_cast<size_t>(__builtin_ctzll(x)) >> 3;
          break;
        }
        pos += 8;
        ref += 8;
        continue;
      }
      while (pos < srcLength && src[pos] == src[ref]) {
        ++pos;
        ++ref;
      }
      break;
    }
    size_t matchLength = pos - matchStart;

    const size_t token = matchLength < kMlMask ? matchLength : kMlMask;
    if (literals >= kRunMask) {
      dst[dpos++] = static_cast<uint8_t>((kRunMask << 4) + token);
      dpos = PutLength(dst, dpos, literals - kRunMask);
    } else {
      dst[dpos++] = static_cast<uint8_t>((literals << 4) + token);
    }
    std::memcpy(dst + dpos, src + anchor, literals);
    dpos += literals;
    dst[dpos++] = static_cast<uint8_t>(offset);
    dst[dpos++] = static_cast<uint8_t>(offset >> 8);
    if (matchLength >= kMlMask) {
      matchLength -= kMlMask;
      while (matchLength >= 255) {
        matchLength -= 255;
        dst[dpos++] = 255;
      }
      dst[dpos++] = static_cast<uint8_t>(matchLength);
    }
    anchor = pos;
  }

  if (anchor == 0) return 0;  // no match at all: cannot compress

  const size_t literals = len - anchor;
  if (literals >= kRunMask) {
    dst[dpos++] = static_cast<uint8_t>(kRunMask << 4);
    dpos = PutLength(dst, dpos, literals - kRunMask);
  } else {
    dst[dpos++] = static_cast<uint8_t>(literals << 4);
  }
  std::memcpy(dst + dpos, src + anchor, literals);
  return dpos + literals;
}

bool Lz4DecompressPage(const uint8_t* src, size_t srcLen, uint8_t* dst, size_t len) {
  if (srcLen == 0 || srcLen > INT_MAX || len > INT_MAX) return false;
  const int n = LZ4_decompress_safe(reinterpret_cast<const char*>(src), reinterpret_cast<char*>(dst),
                                    static_cast<int>(srcLen), static_cast<int>(len));
  return n >= 0 && static_cast<size_t>(n) == len;
}

}  // namespace pagewire
