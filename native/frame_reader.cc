// FrameReader: reads the frames of a connected socket on a thread of its own, straight into buffers the
// caller provides: the header into one, the payload into another, with as many read() calls as the
// kernel needs and no copy in between. Node's own reads go through 64 KiB buffers that JavaScript
// then joins into frames (a second copy of every page, and fresh memory for each frame). Only bytes
// are read here; the header is checked in TypeScript (src/wire/frame-decoder.ts), before the payload
// is used. With authenticate(key), each frame's ChaCha20-Poly1305 tag (src/transport/frame-auth.ts) is
// checked here too, on this thread, while the payload is still in cache: the JavaScript thread, which is
// on a migration's critical path, never hashes the bytes.
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

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
  kForged = 6,       // the frame's tag does not verify (authenticate()); the third value is bytes read
};

constexpr size_t kKeyBytes = 32;
constexpr uint64_t kTagBytes = 16;

// Whether the last 16 bytes of payload[0, length) are the ChaCha20-Poly1305 tag, under key and the nonce
// u32 0 || u64 number (little-endian), of the header and the rest of the payload as associated data.
bool TagVerifies(const uint8_t* key, uint64_t number, const uint8_t* header, const uint8_t* payload, uint64_t length) {
  if (length < kTagBytes || length - kTagBytes > static_cast<uint64_t>(INT32_MAX)) return false;
  uint8_t nonce[12] = {0};
  for (int i = 0; i < 8; i++) nonce[4 + i] = static_cast<uint8_t>(number >> (8 * i));
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  if (ctx == nullptr) return false;
  uint8_t tag[kTagBytes];
  int ignored = 0;
  const bool ok = EVP_EncryptInit_ex(ctx, EVP_chacha20_poly1305(), nullptr, key, nonce) == 1 &&
                  EVP_EncryptUpdate(ctx, nullptr, &ignored, header, static_cast<int>(kHeaderBytes)) == 1 &&
                  EVP_EncryptUpdate(ctx, nullptr, &ignored, payload, static_cast<int>(length - kTagBytes)) == 1 &&
                  EVP_EncryptFinal_ex(ctx, tag, &ignored) == 1 &&
                  EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, static_cast<int>(kTagBytes), tag) == 1;
  EVP_CIPHER_CTX_free(ctx);
  return ok && CRYPTO_memcmp(tag, payload + length - kTagBytes, kTagBytes) == 0;
}

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
                           InstanceMethod<&FrameReader::Authenticate>("authenticate"),
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

  // authenticate(key, nextNumber): from the next frame on, check each frame's tag under key, the first
  // with nextNumber as its number. Only between reads.
  Napi::Value Authenticate(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (busy_) throw Napi::Error::New(env, "a read is in flight: authenticate between reads");
    TypedSpan<uint8_t> key = ToU8(Arg(info, 0), "key");
    if (key.length != kKeyBytes) ThrowRange(env, "key must hold 32 bytes");
    const uint64_t next = ToIndex(Arg(info, 1), "nextNumber", UINT32_MAX);
    std::lock_guard<std::mutex> lock(mutex_);
    memcpy(key_, key.data, kKeyBytes);
    nextNumber_ = next;
    authenticated_ = true;
    return env.Undefined();
  }

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
      if (Fill(r.payload, r.capacity, false, &out)) Verify(lastHeader_, r.payload, r.capacity, &out);
      return out;
    }
    if (!Fill(r.header, kHeaderBytes, true, &out)) return out;
    out.length = Load32(r.header + 4);
    if (out.length > r.capacity) {
      // The payload comes with readPayload(), which checks the tag against this header.
      memcpy(lastHeader_, r.header, kHeaderBytes);
      out.status = kPayloadLater;
      return out;
    }
    if (Fill(r.payload, out.length, false, &out)) Verify(r.header, r.payload, out.length, &out);
    return out;
  }

  // On this thread, a whole frame just read: with a key, its tag must verify (the key and number are
  // set only between reads, so no lock is needed here).
  void Verify(const uint8_t* header, const uint8_t* payload, uint64_t length, ReadOutcome* out) {
    if (!authenticated_) return;
    const uint64_t number = nextNumber_++;
    if (!TagVerifies(key_, number, header, payload, length)) out->status = kForged;
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
  // Set between reads (authenticate()), used by the reader thread during one: the hand-over through
  // mutex_ with each request orders them.
  bool authenticated_ = false;
  uint8_t key_[kKeyBytes] = {0};
  uint64_t nextNumber_ = 0;
  uint8_t lastHeader_[kHeaderBytes] = {0};
  Napi::ThreadSafeFunction done_;
  std::optional<Napi::Promise::Deferred> deferred_;
  Napi::ObjectReference headerRef_, payloadRef_, selfRef_;
};

}  // namespace

void InitFrameReader(Napi::Env env, Napi::Object exports) {
  exports.Set("FrameReader", FrameReader::Define(env));
}

}  // namespace pagewire
