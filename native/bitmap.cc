// Dirty-page bitmap: 32-bit words set by JS writers with Atomics.or; bit b of word w is page w*32+b.
#include "region.h"

namespace pagewire {
namespace {

// Page indices are u32, so a scanned bitmap covers at most 2^32 pages = 2^27 words.
constexpr uint64_t kMaxScanWords = uint64_t{1} << 27;

// Int32Array (the contract) or Uint32Array: both are valid Atomics targets with 4-byte words.
TypedSpan<uint32_t> ToBitmap(const Napi::Value& v) {
  if (v.IsTypedArray()) {
    napi_typedarray_type t = v.As<Napi::TypedArray>().TypedArrayType();
    if (t == napi_int32_array) return ToTyped<uint32_t>(v, napi_int32_array, "bitmap", "Int32Array");
  }
  return ToTyped<uint32_t>(v, napi_uint32_array, "bitmap", "Int32Array");
}

void CheckRange(Napi::Env env, uint64_t start, uint64_t end, uint64_t length, const char* what) {
  if (start > end) ThrowRange(env, "wordStart must be <= wordEnd");
  if (end > length) {
    ThrowRange(env, "wordEnd " + std::to_string(end) + " is beyond " + what + "'s " +
                        std::to_string(length) + " words");
  }
}

Napi::Value DirtySync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TypedSpan<uint32_t> bitmap = ToBitmap(Arg(info, 0));
  TypedSpan<uint32_t> snapshot = ToU32(Arg(info, 1), "snapshot");
  uint64_t start = ToIndex(Arg(info, 2), "wordStart");
  uint64_t end = ToIndex(Arg(info, 3), "wordEnd");
  CheckRange(env, start, end, bitmap.length, "bitmap");
  CheckRange(env, start, end, snapshot.length, "snapshot");
  uint64_t bits = 0;
  for (uint64_t w = start; w < end; ++w) {
    uint32_t* word = &bitmap.data[w];
    // A word that loads as zero is left alone (an exchange would store the zero it read): this keeps
    // clean cache lines shared with writer threads. A bit set after the load waits for the next sync.
    uint32_t v = __atomic_load_n(word, __ATOMIC_SEQ_CST);
    if (v != 0) v = __atomic_exchange_n(word, 0u, __ATOMIC_SEQ_CST);
    snapshot.data[w] = v;
    bits += static_cast<uint64_t>(__builtin_popcount(v));
  }
  return Napi::Number::New(env, static_cast<double>(bits));
}

Napi::Value DirtyCount(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TypedSpan<uint32_t> bitmap = ToBitmap(Arg(info, 0));
  uint64_t start = ToIndex(Arg(info, 1), "wordStart");
  uint64_t end = ToIndex(Arg(info, 2), "wordEnd");
  CheckRange(env, start, end, bitmap.length, "bitmap");
  uint64_t bits = 0;
  for (uint64_t w = start; w < end; ++w) {
    bits += static_cast<uint64_t>(__builtin_popcount(__atomic_load_n(&bitmap.data[w], __ATOMIC_RELAXED)));
  }
  return Napi::Number::New(env, static_cast<double>(bits));
}

Napi::Value DirtyScan(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TypedSpan<uint32_t> snap = ToU32(Arg(info, 0), "snapshot");
  uint64_t start = ToIndex(Arg(info, 1), "wordStart");
  uint64_t end = ToIndex(Arg(info, 2), "wordEnd");
  TypedSpan<uint32_t> out = ToU32(Arg(info, 3), "out");
  CheckRange(env, start, end, snap.length, "snapshot");
  if (end > kMaxScanWords) ThrowRange(env, "wordEnd must be <= 2^27 (page indices are u32)");

  const uint32_t* words = snap.data;
  uint32_t* dst = out.data;
  const uint64_t cap = out.length;
  uint64_t n = 0;
  uint64_t w = start;
  while (w < end) {
    if (cap - n < 32) break;  // never split a word
    // Two words at a time while both fit: skip zero pairs with one test.
    if (end - w >= 2 && cap - n >= 64) {
      uint64_t pair = static_cast<uint64_t>(words[w]) | (static_cast<uint64_t>(words[w + 1]) << 32);
      const uint32_t base = static_cast<uint32_t>(w) * 32u;
      while (pair != 0) {
        dst[n++] = base + static_cast<uint32_t>(__builtin_ctzll(pair));
        pair &= pair - 1;
      }
      w += 2;
      continue;
    }
    uint32_t word = words[w];
    const uint32_t base = static_cast<uint32_t>(w) * 32u;
    while (word != 0) {
      dst[n++] = base + static_cast<uint32_t>(__builtin_ctz(word));
      word &= word - 1;
    }
    ++w;
  }
  return NumberTuple(env, {static_cast<double>(n), static_cast<double>(w)});
}

}  // namespace

void InitBitmap(Napi::Env env, Napi::Object exports) {
  exports.Set("dirtySync", Napi::Function::New<DirtySync>(env, "dirtySync"));
  exports.Set("dirtyCount", Napi::Function::New<DirtyCount>(env, "dirtyCount"));
  exports.Set("dirtyScan", Napi::Function::New<DirtyScan>(env, "dirtyScan"));
}

}  // namespace pagewire
