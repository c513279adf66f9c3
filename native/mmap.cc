// mapFile, mapFilePrivate and the Mapping class: a file mapped MAP_SHARED or MAP_PRIVATE, shared between
// the JS object and every external ArrayBuffer view through a shared_ptr<State>; unmapped when the last
// reference goes.
#include <errno.h>
#include <fcntl.h>
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
  int fd = -1;  // -1 for a private mapping
  bool writable = false;
  ~State() {
    if (addr != nullptr) munmap(addr, length);
    if (fd >= 0) ::close(fd);
  }
};

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

  // Only mapFile and mapFilePrivate construct: they pass an External carrying the new state, which JS
  // cannot forge.
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
    if (state_->fd < 0) throw Napi::Error::New(env, "a private mapping has no file to write back to");
    if (msync(state_->addr, state_->length, MS_SYNC) != 0) throw ErrnoError(env, "msync failed", errno);
    if (fsync(state_->fd) != 0) throw ErrnoError(env, "fsync failed", errno);
    return env.Undefined();
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    state_.reset();  // idempotent; views keep their own references
    return info.Env().Undefined();
  }

  std::shared_ptr<State> state_;
  uint64_t byteLength_ = 0;
};

std::string ToPath(const Napi::Value& v) {
  if (!v.IsString()) ThrowType(v.Env(), "path must be a string");
  std::string path = v.As<Napi::String>().Utf8Value();
  if (path.find('\0') != std::string::npos) ThrowType(v.Env(), "path must not contain NUL bytes");
  return path;
}

// Opens path into state->fd and returns its size: a regular file's, or a block device's.
uint64_t OpenSized(Napi::Env env, const std::string& path, int flags, State* state) {
  state->fd = open(path.c_str(), flags | O_CLOEXEC);
  if (state->fd < 0) throw ErrnoError(env, "open('" + path + "') failed", errno);
  struct stat st;
  if (fstat(state->fd, &st) != 0) throw ErrnoError(env, "fstat('" + path + "') failed", errno);
  if (S_ISREG(st.st_mode)) return static_cast<uint64_t>(st.st_size);
  if (!S_ISBLK(st.st_mode)) ThrowType(env, "'" + path + "' is not a regular file or block device");
  off_t end = lseek(state->fd, 0, SEEK_END);
  if (end < 0) throw ErrnoError(env, "lseek('" + path + "') failed", errno);
  return static_cast<uint64_t>(end);
}

void Map(Napi::Env env, const std::string& path, uint64_t offset, uint64_t length, int prot, int flags,
         State* state) {
  void* addr = mmap(nullptr, static_cast<size_t>(length), prot, flags, state->fd, static_cast<off_t>(offset));
  if (addr == MAP_FAILED) throw ErrnoError(env, "mmap('" + path + "') failed", errno);
  state->addr = static_cast<uint8_t*>(addr);
  state->length = static_cast<size_t>(length);
}

Napi::Value NewMapping(Napi::Env env, std::shared_ptr<State>* state) {
  ModuleData* md = env.GetInstanceData<ModuleData>();
  Napi::External<std::shared_ptr<State>> token = Napi::External<std::shared_ptr<State>>::New(env, state);
  return md->mappingCtor.New({token});  // the constructor moves the state out of *state
}

Napi::Value MapFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string path = ToPath(Arg(info, 0));
  uint64_t byteLength = ToIndex(Arg(info, 1), "byteLength");
  bool writable = ToBool(Arg(info, 2), "writable");
  if (byteLength == 0) ThrowRange(env, "byteLength must be > 0");
  if (byteLength > SIZE_MAX) ThrowRange(env, "byteLength does not fit in this address space");

  auto state = std::make_shared<State>();
  state->writable = writable;
  const uint64_t size = OpenSized(env, path, writable ? O_RDWR : O_RDONLY, state.get());
  if (size < byteLength) {
    ThrowRange(env, "'" + path + "' has " + std::to_string(size) + " bytes, fewer than byteLength " +
                        std::to_string(byteLength));
  }
  Map(env, path, 0, byteLength, PROT_READ | (writable ? PROT_WRITE : 0), MAP_SHARED, state.get());
  return NewMapping(env, &state);
}

// mapFilePrivate(path, offset, length, readAhead): [offset, +length) of the file, copy-on-write. Pages
// load from the file on first touch; writes stay in this process. Without readAhead the kernel reads
// only the page touched (MADV_RANDOM): a clone that touches 1% of its pages loads 1%, not the 8 MiB
// around each. The descriptor is closed once mapped, leaving
// fd -1: whatever reads a mapping's file in place of its memory (the encoder's pread, flush) must not
// take the file for this mapping's bytes, nor its offset 0 for the mapping's start.
Napi::Value MapFilePrivate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string path = ToPath(Arg(info, 0));
  const uint64_t offset = ToIndex(Arg(info, 1), "offset");
  const uint64_t length = ToIndex(Arg(info, 2), "length");
  const bool readAhead = info.Length() > 3 && !Arg(info, 3).IsUndefined() && ToBool(Arg(info, 3), "readAhead");
  const uint64_t granule = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  if (offset % granule != 0) {
    ThrowRange(env, "offset " + std::to_string(offset) + " is not a multiple of the system page size " +
                        std::to_string(granule));
  }
  if (length == 0) ThrowRange(env, "length must be > 0");
  if (length > SIZE_MAX) ThrowRange(env, "length does not fit in this address space");

  auto state = std::make_shared<State>();
  state->writable = true;
  // Read access is all MAP_PRIVATE needs, whatever the mapping's protection.
  const uint64_t size = OpenSized(env, path, O_RDONLY, state.get());
  if (size < offset || size - offset < length) {
    ThrowRange(env, "'" + path + "' has " + std::to_string(size) + " bytes, fewer than offset + length = " +
                        std::to_string(offset) + " + " + std::to_string(length));
  }
  Map(env, path, offset, length, PROT_READ | PROT_WRITE, MAP_PRIVATE, state.get());
  // Advice only: a kernel that refuses it still maps the file correctly.
  if (!readAhead) madvise(state->addr, state->length, MADV_RANDOM);
  ::close(state->fd);
  state->fd = -1;
  return NewMapping(env, &state);
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
  exports.Set("mapFilePrivate", Napi::Function::New<MapFilePrivate>(env, "mapFilePrivate"));
}

}  // namespace pagewire
