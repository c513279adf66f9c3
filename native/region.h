// Shared argument handling for the addon: the region helper and strict number / typed-array
// conversions. Everything that protects memory is checked here, in C++, whatever JS did before.
#pragma once
#include <napi.h>
#include <string.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>

namespace pagewire {

// Largest integer a JS number holds exactly.
constexpr uint64_t kMaxSafeInteger = (uint64_t{1} << 53) - 1;

struct RegionSpan {
  uint8_t* data = nullptr;
  uint64_t byteLength = 0;
  bool writable = true;
  // The mapped file, for a shared mapping (-1 otherwise): readers may pread it instead of faulting the
  // mapping in. A private mapping has none: its bytes are not the file's once written.
  int fd = -1;
};

// Implemented in mmap.cc: if obj carries the Mapping type tag, fills *out (throws if closed).
bool MappingRegion(const Napi::Object& obj, RegionSpan* out);

// Registration hooks (addon.cc calls these).
void InitMmap(Napi::Env env, Napi::Object exports);
void InitBitmap(Napi::Env env, Napi::Object exports);
void InitCodec(Napi::Env env, Napi::Object exports);
void InitFrameReader(Napi::Env env, Napi::Object exports);
void InitExtents(Napi::Env env, Napi::Object exports);
void InitPageFileWriter(Napi::Env env, Napi::Object exports);

[[noreturn]] inline void ThrowRange(Napi::Env env, const std::string& msg) {
  throw Napi::RangeError::New(env, msg);
}
[[noreturn]] inline void ThrowType(Napi::Env env, const std::string& msg) {
  throw Napi::TypeError::New(env, msg);
}

// A failed system call as Node reports one: "what: strerror", code the errno's name (glibc 2.32 and
// later), errno negative.
inline Napi::Error ErrnoError(Napi::Env env, const std::string& what, int err) {
  Napi::Error e = Napi::Error::New(env, what + ": " + strerror(err));
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
  if (const char* name = strerrorname_np(err)) e.Set("code", Napi::String::New(env, name));
#endif
  e.Set("errno", Napi::Number::New(env, -err));
  return e;
}

inline Napi::Value Arg(const Napi::CallbackInfo& info, size_t i) {
  return i < info.Length() ? info[i] : info.Env().Undefined();
}

// A non-negative integer JS number <= max (and <= 2^53-1).
inline uint64_t ToIndex(const Napi::Value& v, const char* name, uint64_t max = kMaxSafeInteger) {
  Napi::Env env = v.Env();
  if (!v.IsNumber()) ThrowType(env, std::string(name) + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 0) || d != std::floor(d) || d > static_cast<double>(kMaxSafeInteger)) {
    ThrowRange(env, std::string(name) + " must be a non-negative safe integer");
  }
  uint64_t u = static_cast<uint64_t>(d);
  if (u > max) {
    ThrowRange(env, std::string(name) + " is too large (max " + std::to_string(max) + ")");
  }
  return u;
}

// A power of two in [1, 2^27]: an XBZRLE run length of a page that size fits the 4 ULEB128 bytes
// the decoder accepts (migrations use 512 .. 1 MiB).
inline uint64_t ToPageSize(const Napi::Value& v) {
  uint64_t ps = ToIndex(v, "pageSize", uint64_t{1} << 27);
  if (ps == 0 || (ps & (ps - 1)) != 0) {
    ThrowRange(v.Env(), "pageSize must be a power of two between 1 and 2^27");
  }
  return ps;
}

inline bool ToBool(const Napi::Value& v, const char* name) {
  if (!v.IsBoolean()) ThrowType(v.Env(), std::string(name) + " must be a boolean");
  return v.As<Napi::Boolean>().Value();
}

// A typed array of exactly the given element type.
template <typename T>
struct TypedSpan {
  T* data = nullptr;
  uint64_t length = 0;  // elements
};

template <typename T>
inline TypedSpan<T> ToTyped(const Napi::Value& v, napi_typedarray_type type, const char* name,
                            const char* typeName) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != type) {
    ThrowType(v.Env(), std::string(name) + " must be a " + typeName);
  }
  napi_env env = v.Env();
  napi_typedarray_type actual;
  size_t elements = 0;
  void* data = nullptr;
  napi_status st = napi_get_typedarray_info(env, v, &actual, &elements, &data, nullptr, nullptr);
  NAPI_THROW_IF_FAILED(env, st, TypedSpan<T>());
  TypedSpan<T> s;
  s.length = elements;
  s.data = elements > 0 ? static_cast<T*>(data) : nullptr;  // data already includes byteOffset
  return s;
}

inline TypedSpan<uint8_t> ToU8(const Napi::Value& v, const char* name) {
  return ToTyped<uint8_t>(v, napi_uint8_array, name, "Uint8Array");
}
inline TypedSpan<uint32_t> ToU32(const Napi::Value& v, const char* name) {
  return ToTyped<uint32_t>(v, napi_uint32_array, name, "Uint32Array");
}
inline TypedSpan<uint64_t> ToBigU64(const Napi::Value& v, const char* name) {
  return ToTyped<uint64_t>(v, napi_biguint64_array, name, "BigUint64Array");
}

// Bytes of any ArrayBufferView (TypedArray or DataView) or plain ArrayBuffer; false otherwise.
inline bool ViewBytes(const Napi::Value& v, RegionSpan* out) {
  napi_env env = v.Env();
  void* data = nullptr;
  size_t len = 0;
  if (v.IsDataView()) {
    // napi_get_dataview_info reports size_t byte lengths (a DataView over a SAB may exceed 4 GiB).
    napi_status st = napi_get_dataview_info(env, v, &len, &data, nullptr, nullptr);
    NAPI_THROW_IF_FAILED(env, st, false);
  } else if (v.IsTypedArray()) {
    napi_typedarray_type type;
    size_t elements = 0;
    napi_status st = napi_get_typedarray_info(env, v, &type, &elements, &data, nullptr, nullptr);
    NAPI_THROW_IF_FAILED(env, st, false);
    len = v.As<Napi::TypedArray>().ByteLength();
  } else if (v.IsArrayBuffer()) {
    napi_status st = napi_get_arraybuffer_info(env, v, &data, &len);
    NAPI_THROW_IF_FAILED(env, st, false);
  } else {
    return false;
  }
  out->data = len > 0 ? static_cast<uint8_t*>(data) : nullptr;
  out->byteLength = len;
  out->writable = true;
  return true;
}

// The one region helper: DataView, TypedArray, ArrayBuffer, or a Mapping (identified by type tag).
inline RegionSpan GetRegion(const Napi::Value& v, const char* name = "region") {
  RegionSpan r;
  if (ViewBytes(v, &r)) return r;
  if (v.IsObject() && MappingRegion(v.As<Napi::Object>(), &r)) return r;
  ThrowType(v.Env(), std::string(name) +
                         " must be a DataView, a TypedArray, an ArrayBuffer or a mapping from mapFile()");
}

inline bool Overlaps(const void* a, uint64_t alen, const void* b, uint64_t blen) {
  if (alen == 0 || blen == 0) return false;
  uintptr_t a0 = reinterpret_cast<uintptr_t>(a), b0 = reinterpret_cast<uintptr_t>(b);
  return a0 < b0 + blen && b0 < a0 + alen;
}

inline Napi::Array NumberTuple(Napi::Env env, std::initializer_list<double> values) {
  Napi::Array a = Napi::Array::New(env, values.size());
  uint32_t i = 0;
  for (double d : values) a.Set(i++, Napi::Number::New(env, d));
  return a;
}

}  // namespace pagewire
