// FrameReader: reads the frames of a connected socket on a thread of its own, straight into buffers the
// caller provides: the header into one, the payload into another, with as many read() calls as the
// kernel needs and no copy in between. Node's own reads go through 64 KiB buffers that JavaScript
// then joins into frames (a second copy of every page, and fresh memory for each frame). Only bytes
// are read here; the header is checked in TypeScript (src/wire/frame-decoder.ts), before the payload
// is used.
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <string>
#include <system_error>
#include <thread>

#include "bytes.h"
#include "region.h"

namespace pagewire {
namespace {

const napi_type_tag kFrameReaderTag = {0x7061676577697265ULL, 0x6672616d65726401ULL};  // "pagewire" "framerd"
constexpr uint64_t kHeaderBytes = 8;

// Status of a read (binding.ts ReadStatus mirrors this order).
enum ReadStatus : uint32_t {
  kFrame = 0,        // header and payload read
  kPayloadLater = 1, // header read; its payload is longer than the buffer given and is still unread
  kEnded = 2,        // the peer closed the connection between two frames
  kCut = 3,          // the peer closed it inside a frame
  kCancelled = 4,    // cancel() was called
  kFailed = 5,       // read() or poll() failed; the third value is errno
};

struct ReadOutcome {
  uint32_t status = kFrame;
  uint64_t length = 0;  // the payload length the header announced (kFrame, kPayloadLater)
  uint64_t bytes = 0;   // bytes consumed from the socket by this call (errno for kFailed)
};

// Each reader has a thread of its own, blocked in poll() while its peer is quiet: a read that waits for
// the network must not hold one of libuv's pool threads (4 by default), or a target with 4 streams
// waiting for their next round would leave none for the decoders and fsyncs that end this one.
class FrameReader : public Napi::ObjectWrap<FrameReader> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "FrameReader",
                       {
                           InstanceMethod<&FrameReader::Read>("read"),
                           InstanceMethod<&FrameReader::ReadPayload>("readPayload"),
                           InstanceMethod<&FrameReader::Cancel>("cancel"),
                           InstanceMethod<&FrameReader::Close>("close"),
                       });
  }

  // new FrameReader(fd): a duplicate of fd, so that Node closing its own descriptor can never hand
  // this number to another file while a read is in flight; the socket stays open until close().
  explicit FrameReader(const Napi::CallbackInfo& info) : Napi::ObjectWrap<FrameReader>(info) {
    Napi::Env env = info.Env();
    const int fd = static_cast<int>(ToIndex(Arg(info, 0), "fd", INT32_MAX));
    fd_ = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (fd_ < 0) throw Napi::Error::New(env, std::string("cannot duplicate the socket: ") + strerror(errno));
    wake_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (wake_ < 0) {
      const int err = errno;
      CloseDescriptors();
      throw Napi::Error::New(env, std::string("cannot make an eventfd: ") + strerror(err));
    }
    done_ = Napi::ThreadSafeFunction::New(env, Napi::Function::New(env, [](const Napi::CallbackInfo&) {}),
                                          "pagewire:frame-reader", 0, 1);
    done_.Unref(env);  // only a read in flight keeps the process alive
    try {
      thread_ = std::thread([this] { Loop(); });
    } catch (const std::system_error& e) {
      done_.Release();
      CloseDescriptors();
      throw Napi::Error::New(env, std::string("cannot start the reader's thread: ") + e.what());
    }
    // An environment torn down with a read in flight (a worker thread terminated) ends the thread first.
    env_ = env;
    napi_add_env_cleanup_hook(env, StopAtTeardown, this);
    info.This().As<Napi::Object>().TypeTag(&kFrameReaderTag);
  }

  ~FrameReader() override {
    Stop();
    napi_remove_env_cleanup_hook(env_, StopAtTeardown, this);
  }

 private:
  static void StopAtTeardown(void* self) { static_cast<FrameReader*>(self)->Stop(); }

  struct Request {
    uint8_t* header = nullptr;
    uint8_t* payload = nullptr;
    uint64_t capacity = 0;
    bool payloadOnly = false;
  };

  void Loop() {
    for (;;) {
      Request request;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wanted_.wait(lock, [this] { return pending_ || exiting_; });
        if (exiting_) return;
        request = request_;
      }
      const ReadOutcome outcome = Run(request);
      {
        std::lock_guard<std::mutex> lock(mutex_);
        pending_ = false;
        outcome_ = outcome;
      }
      // During an environment's teardown (a worker thread terminated) the callback gets no env: JS can
      // no longer be called, and the cleanup hook below ends this thread.
      done_.BlockingCall([this](Napi::Env env, Napi::Function) {
        if (env == nullptr) return;
        // While the environment shuts down (a process or worker exiting with a read still in flight),
        // the callback may still get an env in which JS can no longer run: resolving the promise then
        // fails. Nobody is left to hear it, and an exception escaping here would abort the process.
        try {
          Settle(env);
        } catch (const Napi::Error&) {
        }
      });
    }
  }

  ReadOutcome Run(const Request& r) {
    ReadOutcome out;
    if (r.payloadOnly) {
      out.length = r.capacity;
      Fill(r.payload, r.capacity, false, &out);
      return out;
    }
    if (!Fill(r.header, kHeaderBytes, true, &out)) return out;
    out.length = Load32(r.header + 4);
    if (out.length > r.capacity) {
      out.status = kPayloadLater;
      return out;
    }
    Fill(r.payload, out.length, false, &out);
    return out;
  }

  // On the main thread, once the reader's thread has finished a read.
  void Settle(Napi::Env env) {
    ReadOutcome outcome;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      outcome = outcome_;
    }
    busy_ = false;
    done_.Unref(env);
    Napi::Promise::Deferred deferred = std::move(*deferred_);
    deferred_.reset();
    headerRef_.Reset();
    payloadRef_.Reset();
    deferred.Resolve(NumberTuple(env, {static_cast<double>(outcome.status), static_cast<double>(outcome.length),
                                       static_cast<double>(outcome.bytes)}));
    selfRef_.Reset();  // last: it may let this object go
  }

  // Reads exactly n bytes into to; false (with out->status set) if it could not. atBoundary: an end
  // of the stream before the first byte is the peer closing between frames, not inside one.
  bool Fill(uint8_t* to, uint64_t n, bool atBoundary, ReadOutcome* out) {
    uint64_t got = 0;
    while (got < n) {
      if (cancelled_.load(std::memory_order_acquire)) {
        out->status = kCancelled;
        return false;
      }
      const ssize_t r = ::read(fd_, to + got, static_cast<size_t>(n - got));
      if (r > 0) {
        got += static_cast<uint64_t>(r);
        out->bytes += static_cast<uint64_t>(r);
        continue;
      }
      if (r == 0) {
        out->status = atBoundary && got == 0 ? kEnded : kCut;
        return false;
      }
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        out->status = kFailed;
        out->bytes = static_cast<uint64_t>(errno);
        return false;
      }
      // Nothing to read yet: wait for bytes, or for cancel(). No timeout here: the caller bounds its
      // wait for a frame with its own timer and cancels.
      pollfd fds[2] = {{fd_, POLLIN, 0}, {wake_, POLLIN, 0}};
      if (poll(fds, 2, -1) < 0 && errno != EINTR) {
        out->status = kFailed;
        out->bytes = static_cast<uint64_t>(errno);
        return false;
      }
    }
    return true;
  }

  Napi::Value Start(const Napi::CallbackInfo& info, bool payloadOnly) {
    Napi::Env env = info.Env();
    if (busy_) throw Napi::Error::New(env, "the frame reader is busy: read one frame at a time");
    if (fd_ < 0) throw Napi::Error::New(env, "the frame reader is closed");
    Request request;
    request.payloadOnly = payloadOnly;
    Napi::Value header = payloadOnly ? env.Undefined() : Arg(info, 0);
    Napi::Value payload = Arg(info, payloadOnly ? 0 : 1);
    if (!payloadOnly) {
      TypedSpan<uint8_t> h = ToU8(header, "header");
      if (h.length < kHeaderBytes) ThrowRange(env, "header must hold 8 bytes");
      request.header = h.data;
    }
    TypedSpan<uint8_t> p = ToU8(payload, "payload");
    request.payload = p.data;
    request.capacity = p.length;
    if (!payloadOnly && Overlaps(request.header, kHeaderBytes, request.payload, request.capacity)) {
      ThrowRange(env, "header and payload must not overlap");
    }
    // The buffers and this object stay alive until the read settles.
    if (!payloadOnly) headerRef_ = Napi::Persistent(header.As<Napi::Object>());
    payloadRef_ = Napi::Persistent(payload.As<Napi::Object>());
    selfRef_ = Napi::Persistent(Value());
    deferred_.emplace(Napi::Promise::Deferred::New(env));
    busy_ = true;
    done_.Ref(env);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      request_ = request;
      pending_ = true;
    }
    wanted_.notify_one();
    return deferred_->Promise();
  }

  // read(header, payload) -> [status, payloadLength, bytesConsumed]: one frame, its payload into
  // payload[0, length) if it fits (kFrame), else only the header (kPayloadLater).
  Napi::Value Read(const Napi::CallbackInfo& info) { return Start(info, false); }

  // readPayload(payload) -> [status, length, bytesConsumed]: exactly payload.length bytes (the rest of
  // a frame whose read() said kPayloadLater).
  Napi::Value ReadPayload(const Napi::CallbackInfo& info) { return Start(info, true); }

  // Wakes a read in flight; it, and every later one, ends with kCancelled.
  Napi::Value Cancel(const Napi::CallbackInfo& info) {
    cancelled_.store(true, std::memory_order_release);
    Wake();
    return info.Env().Undefined();
  }

  // Ends the thread and closes the duplicate (and with it this side's hold on the socket). Only once no
  // read is in flight.
  Napi::Value Close(const Napi::CallbackInfo& info) {
    if (busy_) throw Napi::Error::New(info.Env(), "a read is in flight: cancel() and wait for it first");
    Stop();
    return info.Env().Undefined();
  }

  void Wake() {
    if (wake_ < 0) return;
    const uint64_t one = 1;
    ssize_t ignored = ::write(wake_, &one, sizeof one);  // a full counter is still readable: woken either way
    (void)ignored;
  }

  void Stop() {
    if (thread_.joinable()) {
      {
        std::lock_guard<std::mutex> lock(mutex_);
        exiting_ = true;
      }
      cancelled_.store(true, std::memory_order_release);
      wanted_.notify_one();
      Wake();
      thread_.join();
      done_.Release();
    }
    CloseDescriptors();
  }

  void CloseDescriptors() {
    if (fd_ >= 0) ::close(fd_);
    if (wake_ >= 0) ::close(wake_);
    fd_ = wake_ = -1;
  }

  napi_env env_ = nullptr;
  int fd_ = -1;
  int wake_ = -1;
  std::atomic<bool> cancelled_{false};
  bool busy_ = false;  // main thread only
  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable wanted_;
  bool pending_ = false, exiting_ = false;  // under mutex_
  Request request_;                         // under mutex_
  ReadOutcome outcome_;                     // under mutex_
  Napi::ThreadSafeFunction done_;
  std::optional<Napi::Promise::Deferred> deferred_;
  Napi::ObjectReference headerRef_, payloadRef_, selfRef_;
};

}  // namespace

void InitFrameReader(Napi::Env env, Napi::Object exports) {
  exports.Set("FrameReader", FrameReader::Define(env));
}

}  // namespace pagewire
