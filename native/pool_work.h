// What the batch calls that run on a libuv pool thread share (codec.cc, page_file_writer.cc).
#pragma once
#include <napi.h>

#include <string>
#include <vector>

#include "region.h"

namespace pagewire {

// Async work reads or writes JS-owned memory after the call has returned, so it keeps a reference to
// every object involved until it settles.

using Keep = std::vector<Napi::ObjectReference>;

inline void Hold(Keep* keep, const Napi::Value& v) { keep->push_back(Napi::Persistent(v.As<Napi::Object>())); }

// GetRegion, plus what keeps the region's memory alive. For a Mapping the object is not enough:
// close() unmaps once no view is left. A one-byte view (its ArrayBuffer holds the mapping's state)
// is; it is checked to start at the mapping's address, since view() is a JS-visible method. Called
// before any other argument is read: view() runs JS.
inline RegionSpan HoldRegion(const Napi::Value& v, const char* name, Keep* keep) {
  RegionSpan r;
  if (ViewBytes(v, &r)) {
    Hold(keep, v);
    return r;
  }
  r = GetRegion(v, name);  // a Mapping (throws otherwise, or if closed)
  Napi::Env env = v.Env();
  Napi::Object obj = v.As<Napi::Object>();
  Napi::Value viewFn = obj.Get("view");
  if (!viewFn.IsFunction()) ThrowType(env, std::string(name) + ": the mapping has no view()");
  Napi::Value view = viewFn.As<Napi::Function>().Call(obj, {Napi::Number::New(env, 0), Napi::Number::New(env, 1)});
  if (!view.IsArrayBuffer()) ThrowType(env, std::string(name) + ": the mapping's view() did not return an ArrayBuffer");
  void* viewData = view.As<Napi::ArrayBuffer>().Data();
  r = GetRegion(v, name);  // again: view() may have run anything
  if (viewData != r.data) ThrowType(env, std::string(name) + ": the mapping's view() is not over the mapping");
  Hold(keep, v);
  Hold(keep, view);
  return r;
}

inline RegionSpan ReadRegion(const Napi::Value& v, const char* name, Keep* keep) {
  return keep != nullptr ? HoldRegion(v, name, keep) : GetRegion(v, name);
}

// Pool work that settles a promise: Execute() does the work off the JS thread, Result() turns its
// outcome into the value resolved; an error set in Execute() rejects.
class PromiseWorker : public Napi::AsyncWorker {
 public:
  PromiseWorker(Napi::Env env, const char* name)
      : Napi::AsyncWorker(env, name), deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  virtual Napi::Value Result() = 0;
  void OnOK() override { deferred_.Resolve(Result()); }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
};

// Queues a worker and hands back its promise; a worker that could not be queued is freed here.
template <typename Worker>
Napi::Promise QueueWorker(Worker* worker) {
  Napi::Promise promise = worker->Promise();
  try {
    worker->Queue();
  } catch (...) {
    delete worker;
    throw;
  }
  return promise;
}

}  // namespace pagewire
