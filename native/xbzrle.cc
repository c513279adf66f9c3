// XBZRLE encoder and decoder. The encoder compares 8 bytes at a time: XOR of old and new words, the
// first set bit of a non-zero XOR ends an unchanged run, and the has-zero-byte trick (as QEMU does)
// finds the first unchanged byte that ends a changed run.
#include "xbzrle.h"

#include <cstring>

#include "bytes.h"

namespace pagewire {
namespace {

// Little-endian loads (bytes.h), so that the lowest set bit is always the lowest-addressed byte.
inline size_t FirstByte(uint64_t nonZero) { return static_cast<size_t>(__builtin_ctzll(nonZero)) >> 3; }

constexpr uint64_t kOnes = 0x0101010101010101ULL;
constexpr uint64_t kHighs = 0x8080808080808080ULL;

// The first i in [pos, end) with a[i] != b[i], or end. 32 bytes per step: unchanged runs are long.
inline size_t SkipEqual(const uint8_t* a, const uint8_t* b, size_t pos, size_t end) {
  while (end - pos >= 32) {
    const uint64_t x0 = Load64(a + pos) ^ Load64(b + pos);
    const uint64_t x1 = Load64(a + pos + 8) ^ Load64(b + pos + 8);
    const uint64_t x2 = Load64(a + pos + 16) ^ Load64(b + pos + 16);
    const uint64_t x3 = Load64(a + pos + 24) ^ Load64(b + pos + 24);
    if ((x0 | x1 | x2 | x3) != 0) {
      if (x0 != 0) return pos + FirstByte(x0);
      if (x1 != 0) return pos + 8 + FirstByte(x1);
      if (x2 != 0) return pos + 16 + FirstByte(x2);
      return pos + 24 + FirstByte(x3);
    }
    pos += 32;
  }
  while (end - pos >= 8) {
    const uint64_t x = Load64(a + pos) ^ Load64(b + pos);
    if (x != 0) return pos + FirstByte(x);
    pos += 8;
  }
  while (pos < end && a[pos] == b[pos]) ++pos;
  return pos;
}

// The first i in [pos, end) with a[i] == b[i], or end. (x - 0x01..) & ~x & 0x80.. is non-zero iff x
// has a zero byte, and its lowest set bit is exactly in the lowest zero byte (borrows only run upward).
inline size_t SkipDiffer(const uint8_t* a, const uint8_t* b, size_t pos, size_t end) {
  while (end - pos >= 8) {
    const uint64_t x = Load64(a + pos) ^ Load64(b + pos);
    const uint64_t z = (x - kOnes) & ~x & kHighs;
    if (z != 0) return pos + FirstByte(z);
    pos += 8;
  }
  while (pos < end && a[pos] != b[pos]) ++pos;
  return pos;
}

inline size_t UlebSize(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

inline size_t PutUleb(uint8_t* out, uint64_t v) {
  size_t n = 0;
  while (v >= 0x80) {
    out[n++] = static_cast<uint8_t>(v | 0x80);
    v >>= 7;
  }
  out[n++] = static_cast<uint8_t>(v);
  return n;
}

// At most 4 bytes (28 bits); false when longer or when the payload ends inside it. Each byte is read
// once, so a payload that changes meanwhile cannot make a checked length differ from the one used.
inline bool GetUleb(const uint8_t* p, size_t len, size_t* pos, uint32_t* value) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) {
    if (*pos >= len) return false;
    const uint8_t b = p[(*pos)++];
    v |= static_cast<uint32_t>(b & 0x7f) << (7 * i);
    if ((b & 0x80) == 0) {
      *value = v;
      return true;
    }
  }
  return false;
}

// One pass over the payload with every check; writes the changed runs only when `page` is non-null.
bool Walk(const uint8_t* payload, size_t len, uint8_t* page, size_t pageSize) {
  size_t pos = 0;  // in the payload
  size_t at = 0;   // in the page
  bool first = true;
  while (pos < len) {
    uint32_t zrun, nzrun;
    if (!GetUleb(payload, len, &pos, &zrun)) return false;
    if (zrun == 0 && !first) return false;
    first = false;
    if (pos >= len) return false;  // a zrun without its nzrun (a trailing zrun is never sent)
    if (!GetUleb(payload, len, &pos, &nzrun)) return false;
    if (nzrun == 0) return false;
    if (zrun > pageSize - at) return false;
    at += zrun;
    if (nzrun > pageSize - at) return false;
    if (nzrun > len - pos) return false;
    if (page != nullptr) std::memcpy(page + at, payload + pos, nzrun);
    at += nzrun;
    pos += nzrun;
  }
  return true;
}

}  // namespace

int64_t XbzrleEncode(const uint8_t* oldPage, const uint8_t* newPage, size_t pageSize, uint8_t* out,
                     size_t limit) {
  size_t pos = 0;  // in the page
  size_t d = 0;    // in out; always <= limit
  for (;;) {
    const size_t zstart = pos;
    pos = SkipEqual(oldPage, newPage, pos, pageSize);
    if (pos == pageSize) return static_cast<int64_t>(d);  // the trailing zrun is dropped
    const size_t zrun = pos - zstart;
    // A run costs at least 1 + 1 + nzrun bytes, so an nzrun of room - 1 already does not fit: scan no
    // further than that (a random page gives up after limit bytes, not pageSize).
    const size_t room = limit - d;
    if (room < 3) return -1;
    const size_t scanEnd = pageSize - pos > room - 1 ? pos + (room - 1) : pageSize;
    const size_t nend = SkipDiffer(oldPage, newPage, pos, scanEnd);
    const size_t nzrun = nend - pos;
    if (UlebSize(zrun) + UlebSize(nzrun) + nzrun > room) return -1;
    d += PutUleb(out + d, zrun);
    d += PutUleb(out + d, nzrun);
    std::memcpy(out + d, newPage + pos, nzrun);
    d += nzrun;
    pos = nend;
  }
}

bool XbzrleDecode(const uint8_t* payload, size_t len, uint8_t* page, size_t pageSize) {
  // Check everything before writing, so that a malformed payload leaves the page as it was; the
  // writing pass checks again (it is cheap), so a payload changed in between still cannot write
  // outside the page.
  if (!Walk(payload, len, nullptr, pageSize)) return false;
  return Walk(payload, len, page, pageSize);
}

}  // namespace pagewire
