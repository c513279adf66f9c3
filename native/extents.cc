// dataExtents: where a sparse file holds data, from lseek(SEEK_DATA/SEEK_HOLE), so that round 1 of a
// disk image reads only its data and never its holes (which read as zeros). One call per file.
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "region.h"

namespace pagewire {
namespace {

// dataExtents(path) -> Float64Array [start0, end0, start1, end1, ...] of byte ranges holding data, in
// order; a file system without SEEK_DATA reports the whole file as data.
Napi::Value DataExtents(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "dataExtents(path): path must be a string");
  const std::string path = info[0].As<Napi::String>().Utf8Value();
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Napi::Error::New(env, "cannot open " + path + ": " + strerror(errno));
  std::vector<double> extents;
  const off_t size = ::lseek(fd, 0, SEEK_END);
  int failure = size < 0 ? errno : 0;
  for (off_t at = 0; failure == 0 && at < size;) {
    const off_t data = ::lseek(fd, at, SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) break;  // only a hole remains
      if (errno == EINVAL && at == 0) {  // no SEEK_DATA here: all of it is data
        extents = {0, static_cast<double>(size)};
        break;
      }
      failure = errno;
      break;
    }
    off_t hole = ::lseek(fd, data, SEEK_HOLE);
    if (hole < 0) {
      failure = errno;
      break;
    }
    extents.push_back(static_cast<double>(data));
    extents.push_back(static_cast<double>(hole));
    at = hole;
  }
  ::close(fd);
  if (failure != 0) throw Napi::Error::New(env, "cannot find the data of " + path + ": " + strerror(failure));
  Napi::Float64Array out = Napi::Float64Array::New(env, extents.size());
  if (!extents.empty()) memcpy(out.Data(), extents.data(), extents.size() * sizeof(double));
  return out;
}

}  // namespace

void InitExtents(Napi::Env env, Napi::Object exports) {
  exports.Set("dataExtents", Napi::Function::New<DataExtents>(env, "dataExtents"));
}

}  // namespace pagewire
