// Registration only: each native/*.cc contributes its functions.
#include <napi.h>

#include "region.h"

namespace {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("kind", Napi::String::New(env, "addon"));
  pagewire::InitMmap(env, exports);
  pagewire::InitBitmap(env, exports);
  pagewire::InitCodec(env, exports);
  pagewire::InitFrameReader(env, exports);
  pagewire::InitExtents(env, exports);
  pagewire::InitPageFileWriter(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(pagewire, Init)
