// FrameReader: reads the frames of a connected socket on a pool thread, straight into buffers the
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
#include <string>

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
      ::close(fd_);
      fd_ = -1;
      throw Napi::Error::New(env, std::string("cannot make an eventfd: ") + strerror(err));
    }
    info.This().As<Napi::Object>().TypeTag(&kFrameReaderTag);
  }

  ~FrameReader() override { CloseDescriptors(); }

  // The work of one call, on a pool thread: no napi calls.
  ReadOutcome Run(uint8_t* header, uint8_t* payload, uint64_t capacity, bool payloadOnly) {
    ReadOutcome out;
    if (payloadOnly) {
      out.length = capacity;
      Fill(payload, capacity, false, &out);
      return out;
    }
    if (!Fill(header, kHeaderBytes, true, &out)) return out;
    out.length = Load32(header + 4);
    if (out.length > capacity) {
      out.status = kPayloadLater;
      return out;
    }
    Fill(payload, out.length, false, &out);
    return out;
  }

  void Settled() { busy_ = false; }

 private:
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

  Napi::Value Read(const Napi::CallbackInfo& info);
  Napi::Value ReadPayload(const Napi::CallbackInfo& info);
  Napi::Value Start(const Napi::CallbackInfo& info, bool payloadOnly);

  // Wakes a read in flight; it, and every later one, ends with kCancelled.
  Napi::Value Cancel(const Napi::CallbackInfo& info) {
    cancelled_.store(true, std::memory_order_release);
    if (wake_ >= 0) {
      const uint64_t one = 1;
      ssize_t ignored = ::write(wake_, &one, sizeof one);  // a full counter is still readable: woken either way
      (void)ignored;
    }
    return info.Env().Undefined();
  }

  // Closes the duplicate (and with it this side's hold on the socket). Only once no read is in flight.
  Napi::Value Close(const Napi::CallbackInfo& info) {
    if (busy_) throw Napi::Error::New(info.Env(), "a read is in flight: cancel() and wait for it first");
    CloseDescriptors();
    return info.Env().Undefined();
  }

  void CloseDescriptors() {
    if (fd_ >= 0) ::close(fd_);
    if (wake_ >= 0) ::close(wake_);
    fd_ = wake_ = -1;
  }

  int fd_ = -1;
  int wake_ = -1;
  std::atomic<bool> cancelled_{false};
  bool busy_ = false;
};

class FrameReadWorker : public Napi::AsyncWorker {
 public:
  FrameReadWorker(Napi::Env env, FrameReader* reader, Napi::Object readerObject, Napi::Value header,
                  Napi::Value payload, bool payloadOnly)
      : Napi::AsyncWorker(env, "pagewire:read-frame"),
        reader_(reader),
        readerRef_(Napi::Persistent(readerObject)),
        deferred_(Napi::Promise::Deferred::New(env)),
        payloadOnly_(payloadOnly) {
    if (!payloadOnly) {
      TypedSpan<uint8_t> h = ToU8(header, "header");
      if (h.length < kHeaderBytes) ThrowRange(env, "header must hold 8 bytes");
      header_ = h.data;
      headerRef_ = Napi::Persistent(header.As<Napi::Object>());
    }
    TypedSpan<uint8_t> p = ToU8(payload, "payload");
    payload_ = p.data;
    capacity_ = p.length;
    payloadRef_ = Napi::Persistent(payload.As<Napi::Object>());
  }
  Napi::Promise Promise() { return deferred_.Promise(); }
  void Execute() override { outcome_ = reader_->Run(header_, payload_, capacity_, payloadOnly_); }
  void OnOK() override {
    reader_->Settled();
    Napi::Env env = Env();
    deferred_.Resolve(NumberTuple(env, {static_cast<double>(outcome_.status), static_cast<double>(outcome_.length),
                                        static_cast<double>(outcome_.bytes)}));
  }
  void OnError(const Napi::Error& e) override {
    reader_->Settled();
    deferred_.Reject(e.Value());
  }

 private:
  FrameReader* reader_;
  Napi::ObjectReference readerRef_;  // keeps the reader (and its descriptors) alive
  Napi::ObjectReference headerRef_, payloadRef_;
  Napi::Promise::Deferred deferred_;
  bool payloadOnly_;
  uint8_t* header_ = nullptr;
  uint8_t* payload_ = nullptr;
  uint64_t capacity_ = 0;
  ReadOutcome outcome_;
};

Napi::Value FrameReader::Start(const Napi::CallbackInfo& info, bool payloadOnly) {
  Napi::Env env = info.Env();
  if (busy_) throw Napi::Error::New(env, "the frame reader is busy: read one frame at a time");
  if (fd_ < 0) throw Napi::Error::New(env, "the frame reader is closed");
  auto* worker = new FrameReadWorker(env, this, Value(), payloadOnly ? env.Undefined() : Arg(info, 0),
                                     Arg(info, payloadOnly ? 0 : 1), payloadOnly);
  Napi::Promise promise = worker->Promise();
  try {
    worker->Queue();
  } catch (...) {
    delete worker;
    throw;
  }
  busy_ = true;
  return promise;
}

// read(header, payload) -> [status, payloadLength, bytesConsumed]: one frame, its payload into
// payload[0, length) if it fits (kFrame), else only the header (kPayloadLater).
Napi::Value FrameReader::Read(const Napi::CallbackInfo& info) { return Start(info, false); }

// readPayload(payload) -> [status, length, bytesConsumed]: exactly payload.length bytes (the rest of a
// frame whose read() said kPayloadLater).
Napi::Value FrameReader::ReadPayload(const Napi::CallbackInfo& info) { return Start(info, true); }

}  // namespace

void InitFrameReader(Napi::Env env, Napi::Object exports) {
  exports.Set("FrameReader", FrameReader::Define(env));
}

}  // namespace pagewire
