// mapFile and the Mapping class: a file mapped MAP_SHARED, shared between the JS object and every
// external ArrayBuffer view through a shared_ptr<State>; unmapped when the last reference goes.
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <memory>
#include <string>

#include "region.h"

namespace pagewire {
namespace {

const napi_type_tag kMappingTag = {0x7061676577697265ULL, 0x6d617070696e6701ULL};  // "pagewire" "mapping"
constexpr uint64_t kMaxViewLength = uint64_t{1} << 30;

struct State {
  uint8_t* addr = nullptr;
  size_t length = 0;
  int fd = -1;
  bool writable = false;
  ~State() {
    if (addr != nullptr) munmap(addr, length);
    if (fd >= 0) ::close(fd);
  }
};

[[noreturn]] void ThrowErrno(Napi::Env env, const std::string& what, int err) {
  Napi::Error e = Napi::Error::New(env, what + ": " + strerror(err));
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
  if (const char* name = strerrorname_np(err)) e.Set("code", Napi::String::New(env, name));
#endif
  e.Set("errno", Napi::Number::New(env, -err));
  throw e;
}

struct ModuleData {
  Napi::FunctionReference mappingCtor;
};

class Mapping : public Napi::ObjectWrap<Mapping> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Mapping",
                       {
                           InstanceAccessor<&Mapping::ByteLength>("byteLength", napi_enumerable),
                           InstanceMethod<&Mapping::View>("view"),
                           InstanceMethod<&Mapping::Flush>("flush"),
                           InstanceMethod<&Mapping::Close>("close"),
                       });
  }

  // Only mapFile can construct: it passes an External carrying the new state, which JS cannot forge.
  explicit Mapping(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Mapping>(info) {
    Napi::Env env = info.Env();
    if (info.Length() != 1 || !info[0].IsExternal()) {
      ThrowType(env, "Mapping cannot be constructed directly; use mapFile()");
    }
    auto* pending = info[0].As<Napi::External<std::shared_ptr<State>>>().Data();
    if (pending == nullptr || !*pending) ThrowType(env, "Mapping cannot be constructed directly; use mapFile()");
    state_ = std::move(*pending);
    byteLength_ = state_->length;
    info.This().As<Napi::Object>().TypeTag(&kMappingTag);
  }

  // For GetRegion; throws if closed.
  RegionSpan Region(Napi::Env env) const {
    if (!state_) throw Napi::Error::New(env, "mapping is closed");
    RegionSpan r;
    r.data = state_->addr;
    r.byteLength = state_->length;
    r.writable = state_->writable;
    r.fd = state_->fd;
    return r;
  }

 private:
  Napi::Value ByteLength(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(byteLength_));
  }

  Napi::Value View(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!state_) throw Napi::Error::New(env, "mapping is closed");
    uint64_t offset = ToIndex(Arg(info, 0), "offset");
    uint64_t length = ToIndex(Arg(info, 1), "length");
    if (length == 0) ThrowRange(env, "view length must be > 0");
    if (length > kMaxViewLength) ThrowRange(env, "view length must be <= 1 GiB");
    if (offset > state_->length || length > state_->length - offset) {
      ThrowRange(env, "view [" + std::to_string(offset) + ", +" + std::to_string(length) +
                          ") is beyond the mapping's " + std::to_string(state_->length) + " bytes");
    }
    auto* hold = new std::shared_ptr<State>(state_);
    try {
      return Napi::ArrayBuffer::New(
          env, state_->addr + offset, static_cast<size_t>(length),
          [](Napi::Env, void*, std::shared_ptr<State>* h) { delete h; }, hold);
    } catch (...) {
      delete hold;
      throw;
    }
  }

  Napi::Value Flush(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!state_) throw Napi::Error::New(env, "mapping is closed");
    if (msync(state_->addr, state_->length, MS_SYNC) != 0) ThrowErrno(env, "msync failed", errno);
    if (fsync(state_->fd) != 0) ThrowErrno(env, "fsync failed", errno);
    return env.Undefined();
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    state_.reset();  // idempotent; views keep their own references
    return info.Env().Undefined();
  }

  std::shared_ptr<State> state_;
  uint64_t byteLength_ = 0;
};

Napi::Value MapFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Arg(info, 0).IsString()) ThrowType(env, "path must be a string");
  std::string path = info[0].As<Napi::String>().Utf8Value();
  if (path.find('\0') != std::string::npos) ThrowType(env, "path must not contain NUL bytes");
  uint64_t byteLength = ToIndex(Arg(info, 1), "byteLength");
  bool writable = ToBool(Arg(info, 2), "writable");
  if (byteLength == 0) ThrowRange(env, "byteLength must be > 0");
  if (byteLength > SIZE_MAX) ThrowRange(env, "byteLength does not fit in this address space");

  auto state = std::make_shared<State>();
  state->writable = writable;
  state->fd = open(path.c_str(), (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC);
  if (state->fd < 0) ThrowErrno(env, "open('" + path + "') failed", errno);

  struct stat st;
  if (fstat(state->fd, &st) != 0) ThrowErrno(env, "fstat('" + path + "') failed", errno);
  uint64_t size;
  if (S_ISREG(st.st_mode)) {
    size = static_cast<uint64_t>(st.st_size);
  } else if (S_ISBLK(st.st_mode)) {
    off_t end = lseek(state->fd, 0, SEEK_END);
    if (end < 0) ThrowErrno(env, "lseek('" + path + "') failed", errno);
    size = static_cast<uint64_t>(end);
  } else {
    ThrowType(env, "'" + path + "' is not a regular file or block device");
  }
  if (size < byteLength) {
    ThrowRange(env, "'" + path + "' has " + std::to_string(size) + " bytes, fewer than byteLength " +
                        std::to_string(byteLength));
  }

  void* addr = mmap(nullptr, static_cast<size_t>(byteLength), PROT_READ | (writable ? PROT_WRITE : 0),
                    MAP_SHARED, state->fd, 0);
  if (addr == MAP_FAILED) ThrowErrno(env, "mmap('" + path + "') failed", errno);
  state->addr = static_cast<uint8_t*>(addr);
  state->length = static_cast<size_t>(byteLength);

  ModuleData* md = env.GetInstanceData<ModuleData>();
  Napi::External<std::shared_ptr<State>> token = Napi::External<std::shared_ptr<State>>::New(env, &state);
  return md->mappingCtor.New({token});  // the constructor moves state out of `state`
}

}  // namespace

bool MappingRegion(const Napi::Object& obj, RegionSpan* out) {
  if (!obj.CheckTypeTag(&kMappingTag)) return false;
  Mapping* m = Mapping::Unwrap(obj);
  if (m == nullptr) return false;
  *out = m->Region(obj.Env());
  return true;
}

void InitMmap(Napi::Env env, Napi::Object exports) {
  auto* md = new ModuleData();
  md->mappingCtor = Napi::Persistent(Mapping::Define(env));
  env.SetInstanceData<ModuleData>(md);
  exports.Set("mapFile", Napi::Function::New<MapFile>(env, "mapFile"));
}

}  // namespace pagewire
