// LZ4 blocks of single pages. The compressor is a port of the lz4 npm package's (v0.6.5)
// lib/binding.js compressBlock, byte for byte, so that the addon and the TypeScript twin (which calls
// that function) emit the same records; the C library's compressor picks different matches.
// Decompression is the C library's LZ4_decompress_safe (deps/lz4 of the same package).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

namespace pagewire {

// compressBlock throws for inputs of this size or more; here such a page is simply not compressed.
constexpr size_t kLz4MaxInput = 0x7E000000;

// The lz4 package's compressBound: the output room compressBlock requires (0 when too large).
inline size_t Lz4CompressBound(size_t len) { return len >= kLz4MaxInput ? 0 : len + len / 255 + 16; }

// The compressor's 65536-entry hash table, fresh for every page without clearing it each time: an
// entry stores base + pos + 1, values <= base are empty, and base moves past every page's values.
class Lz4Table {
 public:
  Lz4Table();  // throws std::bad_alloc
  uint32_t* entries() { return entries_.get(); }
  // The base for a page of len bytes (< kLz4MaxInput); clears the table only when base would wrap.
  uint32_t Begin(size_t len);

 private:
  std::unique_ptr<uint32_t[]> entries_;
  uint32_t base_ = 0;
};

// compressBlock(src, dst) of one page with a fresh table: the block's length, or 0 when it found no
// match (also for len <= 12 or len >= kLz4MaxInput). dst must hold Lz4CompressBound(len) bytes.
size_t Lz4CompressPage(const uint8_t* src, size_t len, uint8_t* dst, Lz4Table& table);

// True when src[0, srcLen) is a valid LZ4 block of exactly len bytes, decompressed into dst (len
// bytes). Never writes outside dst or reads outside src; on false dst holds partial output.
bool Lz4DecompressPage(const uint8_t* src, size_t srcLen, uint8_t* dst, size_t len);

}  // namespace pagewire
