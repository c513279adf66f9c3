// XXH64 (seed 0 unless given), written from the public algorithm description.
#pragma once
#include <cstddef>
#include <cstdint>

namespace pagewire {

uint64_t Xxh64(const void* data, size_t len, uint64_t seed = 0);

// Copies len bytes from src to dst (non-overlapping) and returns XXH64 of the bytes written to dst,
// in one pass over cache-sized chunks. The hash always matches dst even if src changes meanwhile.
uint64_t Xxh64Copy(void* dst, const void* src, size_t len, uint64_t seed = 0);

// XXH64 (seed 0) of each of `count` consecutive pages of pageSize bytes, into out[0..count): eight pages
// at a time with AVX-512 where the CPU has it, the same hashes either way.
void Xxh64Pages(const unsigned char* first, size_t pageSize, size_t count, uint64_t* out);

// XXH64 of `len` zero bytes, without touching memory.
uint64_t Xxh64Zeros(size_t len, uint64_t seed = 0);

}  // namespace pagewire
