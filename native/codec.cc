// Page codec (docs/PROTOCOL.md section 4): XXH64 of bytes and pages, the PageEncoder that turns pages
// into wire records, the decoder that verifies and applies them, and batch-shaped kernels. Records
// (little-endian):
//   0 u32 pageIndex | 4 u8 encoding (0 ZERO, 1 RAW, 2 DELTA, 3 DUP, 4 LZ4) | 5 u8 reserved=0 |
//   6 u16 reserved=0 | 8 u32 payloadLength | 12 u64 xxh64 of the page's pageSize bytes after the
//   record is applied | 20 payload
// The encoder follows the spec's state machine step for step: the TypeScript twin (src/native/twin)
// implements the same one, and both must produce byte-identical batches.
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "bytes.h"
#include "file_io.h"
#include "page_lz4.h"
#include "pool_work.h"
#include "region.h"
#include "xbzrle.h"
#include "xxhash64.h"

namespace pagewire {
namespace {

constexpr uint64_t kHeaderSize = 20;
constexpr uint8_t kEncZero = 0;
constexpr uint8_t kEncRaw = 1;
constexpr uint8_t kEncDelta = 2;
constexpr uint8_t kEncDup = 3;
constexpr uint8_t kEncLz4 = 4;
constexpr uint64_t kMaxPageCount = uint64_t{1} << 32;  // page indices are u32 on the wire
// The encoder's cache uses UINT32_MAX as "no page", so its page indices stop one short.
constexpr uint64_t kMaxEncoderPageCount = kMaxPageCount - 1;
constexpr uint32_t kNone = UINT32_MAX;

// Status codes of applyPages (binding.ts ApplyStatus mirrors this order).
enum ApplyStatus : uint32_t {
  kOk = 0,
  kTruncated = 1,
  kIndexOutOfRange = 2,
  kBadEncoding = 3,
  kBadLength = 4,
  kChecksumMismatch = 5,
  kTrailingBytes = 6,
  kBadPayload = 7,
  kWrongStream = 8,
};

// pageCount pages of pageSize bytes must lie inside the region (checked without overflow).
uint64_t CheckPages(Napi::Env env, const RegionSpan& region, uint64_t pageSize, uint64_t pageCount,
                    const char* name = "region") {
  if (pageCount > region.byteLength / pageSize) {
    ThrowRange(env, "pageCount " + std::to_string(pageCount) + " * pageSize " + std::to_string(pageSize) +
                        " exceeds the " + name + "'s " + std::to_string(region.byteLength) + " bytes");
  }
  return pageCount * pageSize;  // <= byteLength, so no overflow
}

inline TypedSpan<int32_t> ToI32(const Napi::Value& v, const char* name) {
  return ToTyped<int32_t>(v, napi_int32_array, name, "Int32Array");
}

// Errors raised off the JS thread (file I/O); the message becomes the JS Error's.
struct IoError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

[[noreturn]] void ThrowOutOfMemory(Napi::Env env, const std::string& what) {
  throw Napi::Error::New(env, "out of memory: " + what);
}

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};
template <typename T>
using Buffer = std::unique_ptr<T[], FreeDeleter>;

// malloc / calloc of count elements, nullptr on failure or overflow (the caller throws a JS error).
template <typename T>
Buffer<T> Allocate(uint64_t count, bool zeroed) {
  if (count == 0) count = 1;
  if (count > SIZE_MAX / sizeof(T)) return Buffer<T>();
  void* p = zeroed ? std::calloc(static_cast<size_t>(count), sizeof(T))
                   : std::malloc(static_cast<size_t>(count) * sizeof(T));
  return Buffer<T>(static_cast<T*>(p));
}

// The encoder's page cache: anonymous memory, asked for transparent huge pages where the kernel
// has them (THP "madvise" mode is common): a 64 MiB cache takes 32 faults instead of 16384 as it
// fills, and slot lookups miss the TLB less.
class CacheArena {
 public:
  bool Allocate(uint64_t bytes) {
    if (bytes == 0 || bytes > SIZE_MAX) return false;
    void* p = mmap(nullptr, static_cast<size_t>(bytes), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return false;
#ifdef MADV_HUGEPAGE
    madvise(p, static_cast<size_t>(bytes), MADV_HUGEPAGE);  // a hint: failure changes nothing
#endif
    data_ = static_cast<uint8_t*>(p);
    size_ = static_cast<size_t>(bytes);
    return true;
  }
  uint8_t* data() const { return data_; }
  ~CacheArena() {
    if (data_ != nullptr) munmap(data_, size_);
  }

 private:
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// ---------------------------------------------------------------------------------------------
// XXH64

Napi::Value Xxh64Js(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  RegionSpan bytes;
  if (!ViewBytes(Arg(info, 0), &bytes)) ThrowType(env, "data must be a Uint8Array");
  return Napi::BigInt::New(env, Xxh64(bytes.data, static_cast<size_t>(bytes.byteLength)));
}

// hashPages(region, pageSize, firstPage, count, out, outOffset)
Napi::Value HashPages(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  RegionSpan region = GetRegion(Arg(info, 0));
  uint64_t pageSize = ToPageSize(Arg(info, 1));
  uint64_t firstPage = ToIndex(Arg(info, 2), "firstPage");
  uint64_t count = ToIndex(Arg(info, 3), "count");
  TypedSpan<uint64_t> out = ToBigU64(Arg(info, 4), "out");
  uint64_t outOffset = ToIndex(Arg(info, 5), "outOffset");

  uint64_t regionPages = region.byteLength / pageSize;
  if (firstPage > regionPages || count > regionPages - firstPage) {
    ThrowRange(env, "pages [" + std::to_string(firstPage) + ", +" + std::to_string(count) +
                        ") are beyond the region's " + std::to_string(regionPages) + " pages");
  }
  if (outOffset > out.length || count > out.length - outOffset) {
    ThrowRange(env, "out has " + std::to_string(out.length) + " slots, fewer than outOffset + count = " +
                        std::to_string(outOffset) + " + " + std::to_string(count));
  }
  const uint8_t* page = region.data + firstPage * pageSize;
  for (uint64_t i = 0; i < count; ++i, page += pageSize) {
    out.data[outOffset + i] = Xxh64(page, static_cast<size_t>(pageSize));
  }
  return env.Undefined();
}

// ---------------------------------------------------------------------------------------------
// changedPages(region, pageSize, firstPage, count, sentHashes, out) -> Promise<number>: the hash
// tracker's pass, on a pool thread, so a large region does not stop the event loop (nor, inside the
// pause, the switch-over's messages). Writes the index of every page in [firstPage, +count) whose
// XXH64 differs from sentHashes[page] into out from 0, ascending, and resolves with how many.

struct ChangedPagesJob {
  const uint8_t* region = nullptr;
  // The file a shared mapping maps from offset 0 (-1 for memory): its pages are read with pread,
  // which costs a copy from the page cache but no page faults on the mapping (far the larger cost).
  int regionFd = -1;
  uint64_t pageSize = 0, firstPage = 0, count = 0;
  const uint64_t* sent = nullptr;
  uint32_t* out = nullptr;
};

// Pages [first, +pages) of the region: from the mapping, or read from its file into staging.
const uint8_t* PagesToHash(const ChangedPagesJob& job, uint64_t first, uint64_t pages, std::vector<uint8_t>* staging) {
  const uint8_t* mapped = job.region + first * job.pageSize;
  if (job.regionFd < 0) return mapped;
  const uint64_t length = pages * job.pageSize;
  staging->resize(static_cast<size_t>(length));
  // Where the file cannot be read, the mapping still can.
  if (PreadAll(job.regionFd, staging->data(), length, first * job.pageSize) != 0) return mapped;
  return staging->data();
}

uint64_t FindChangedPages(const ChangedPagesJob& job) {
  // Hashed a block at a time (several pages side by side where the CPU allows), then compared.
  const uint64_t block = std::max<uint64_t>(1, std::min<uint64_t>(64, (uint64_t{1} << 20) / job.pageSize));
  std::vector<uint64_t> hashes(static_cast<size_t>(block));
  std::vector<uint8_t> staging;
  uint64_t n = 0;
  for (uint64_t at = job.firstPage; at < job.firstPage + job.count; at += block) {
    const uint64_t pages = std::min(block, job.firstPage + job.count - at);
    Xxh64Pages(PagesToHash(job, at, pages, &staging), static_cast<size_t>(job.pageSize), static_cast<size_t>(pages), hashes.data());
    for (uint64_t i = 0; i < pages; ++i) {
      if (hashes[i] != job.sent[at + i]) job.out[n++] = static_cast<uint32_t>(at + i);
    }
  }
  return n;
}

class ChangedPagesWorker : public PromiseWorker {
 public:
  ChangedPagesWorker(Napi::Env env, ChangedPagesJob job, Keep keep)
      : PromiseWorker(env, "pagewire:changedPages"), job_(job), keep_(std::move(keep)) {}
  void Execute() override { changed_ = FindChangedPages(job_); }

 private:
  Napi::Value Result() override { return Napi::Number::New(Env(), static_cast<double>(changed_)); }
  ChangedPagesJob job_;
  Keep keep_;
  uint64_t changed_ = 0;
};

Napi::Value ChangedPages(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Keep keep;
  RegionSpan region = HoldRegion(Arg(info, 0), "region", &keep);  // first: it may run JS
  ChangedPagesJob job;
  job.pageSize = ToPageSize(Arg(info, 1));
  job.firstPage = ToIndex(Arg(info, 2), "firstPage");
  job.count = ToIndex(Arg(info, 3), "count");
  TypedSpan<uint64_t> sent = ToBigU64(Arg(info, 4), "sentHashes");
  TypedSpan<uint32_t> out = ToU32(Arg(info, 5), "out");

  const uint64_t regionPages = region.byteLength / job.pageSize;
  if (job.firstPage > regionPages || job.count > regionPages - job.firstPage) {
    ThrowRange(env, "pages [" + std::to_string(job.firstPage) + ", +" + std::to_string(job.count) +
                        ") are beyond the region's " + std::to_string(regionPages) + " pages");
  }
  if (job.firstPage + job.count > kMaxPageCount) ThrowRange(env, "page indices must fit in u32");
  if (sent.length < job.firstPage + job.count) {
    ThrowRange(env, "sentHashes has " + std::to_string(sent.length) + " slots, fewer than firstPage + count = " +
                        std::to_string(job.firstPage + job.count));
  }
  if (out.length < job.count) {
    ThrowRange(env, "out has " + std::to_string(out.length) + " slots, fewer than count " + std::to_string(job.count));
  }
  const uint64_t outBytes = job.count * 4;
  if (Overlaps(out.data, outBytes, region.data + job.firstPage * job.pageSize, job.count * job.pageSize)) {
    ThrowRange(env, "out must not overlap the pages hashed");
  }
  if (Overlaps(out.data, outBytes, sent.data + job.firstPage, job.count * 8)) {
    ThrowRange(env, "out must not overlap sentHashes");
  }
  job.region = region.data;
  job.regionFd = region.fd;
  job.sent = sent.data;
  job.out = out.data;
  Hold(&keep, Arg(info, 4));
  Hold(&keep, Arg(info, 5));
  return QueueWorker(new ChangedPagesWorker(env, job, std::move(keep)));
}

// ---------------------------------------------------------------------------------------------
// PageEncoder

struct EncodeCounts {
  uint64_t bytes = 0, records = 0, zero = 0, delta = 0, dup = 0, lz4 = 0, raw = 0, skipped = 0;
};

Napi::Array EncodeTuple(Napi::Env env, const EncodeCounts& c) {
  return NumberTuple(env, {static_cast<double>(c.bytes), static_cast<double>(c.records), static_cast<double>(c.zero),
                           static_cast<double>(c.delta), static_cast<double>(c.dup), static_cast<double>(c.lz4),
                           static_cast<double>(c.raw), static_cast<double>(c.skipped)});
}

// One checked batch. The indices are a copy: checked once, they cannot change under the work (the
// caller's array may be shared memory, or written by JS while a pool thread encodes).
struct EncodeJob {
  const uint8_t* region = nullptr;
  // The region's file, when it is a mapping: pages are read from it with pread (see PageEncoder::Run).
  int fd = -1;
  std::vector<uint32_t> indices;
  bool skipZero = false;
  bool bulk = false;
  bool lz4 = true;
  uint8_t* out = nullptr;
  uint64_t* sent = nullptr;
};

class PageEncoder : public Napi::ObjectWrap<PageEncoder> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "PageEncoder",
                       {
                           InstanceAccessor<&PageEncoder::CacheSlots>("cacheSlots", napi_enumerable),
                           InstanceAccessor<&PageEncoder::Bulk, &PageEncoder::SetBulk>("bulk", napi_enumerable),
                           InstanceAccessor<&PageEncoder::Lz4, &PageEncoder::SetLz4>("lz4", napi_enumerable),
                           InstanceMethod<&PageEncoder::Encode>("encode"),
                           InstanceMethod<&PageEncoder::EncodeSync>("encodeSync"),
                       });
  }

  // new PageEncoder(pageSize, pageCount, cacheBytes): the whole cache is allocated here (untouched
  // memory costs nothing until used), so a cache that cannot be had fails now, as a JS error.
  explicit PageEncoder(const Napi::CallbackInfo& info) : Napi::ObjectWrap<PageEncoder>(info) {
    Napi::Env env = info.Env();
    pageSize_ = ToPageSize(Arg(info, 0));
    pageCount_ = ToIndex(Arg(info, 1), "pageCount", kMaxEncoderPageCount);
    const uint64_t cacheBytes = ToIndex(Arg(info, 2), "cacheBytes");
    zeroHash_ = Xxh64Zeros(static_cast<size_t>(pageSize_));
    slots_ = std::min(pageCount_, cacheBytes / pageSize_);
    if (slots_ > 0) {
      dupSize_ = 1;
      while (dupSize_ < 2 * slots_) dupSize_ <<= 1;
      const bool arenaOk = bytes_.Allocate(slots_ * pageSize_);  // <= cacheBytes, so no overflow
      slotPage_ = Allocate<uint32_t>(slots_, false);
      slotHash_ = Allocate<uint64_t>(slots_, true);
      slotReferenced_ = Allocate<uint8_t>(slots_, true);
      slotOf_ = Allocate<uint32_t>(pageCount_, true);  // slot + 1, 0 = NONE: calloc'd pages stay lazy
      dupIndex_ = Allocate<uint32_t>(dupSize_, false);
      delta_ = Allocate<uint8_t>(pageSize_ / 4, false);
      if (!arenaOk || !slotPage_ || !slotHash_ || !slotReferenced_ || !slotOf_ || !dupIndex_ || !delta_) {
        ThrowOutOfMemory(env, "the page encoder's cache of " + std::to_string(slots_) + " pages of " +
                                  std::to_string(pageSize_) + " bytes for " + std::to_string(pageCount_) +
                                  " pages");
      }
      std::fill_n(slotPage_.get(), slots_, kNone);
      std::fill_n(dupIndex_.get(), dupSize_, kNone);
    }
    stagePages_ = std::max<uint64_t>(1, kStageBytes / pageSize_);
    stage_ = Allocate<uint8_t>(stagePages_ * pageSize_, false);
    if (!stage_) ThrowOutOfMemory(env, "the page encoder's read buffer");
    if (Lz4CompressBound(pageSize_) > 0) {
      lz4Out_ = Allocate<uint8_t>(Lz4CompressBound(pageSize_), false);
      if (!lz4Out_) ThrowOutOfMemory(env, "the page encoder's LZ4 buffer");
      try {
        lz4Table_.reset(new Lz4Table());
      } catch (const std::bad_alloc&) {
        ThrowOutOfMemory(env, "the page encoder's LZ4 hash table");
      }
    }
  }

  // The work of one batch, on whichever thread: no napi calls. The job was checked by Prepare.
  EncodeCounts Run(const EncodeJob& job);

  void Settled() { busy_ = false; }

 private:
  Napi::Value CacheSlots(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(slots_));
  }

  // Bulk mode (the source's round 1): read when a batch is queued, so a change never reaches a batch
  // already running.
  Napi::Value Bulk(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), bulk_); }
  void SetBulk(const Napi::CallbackInfo& info, const Napi::Value& value) { bulk_ = ToBool(value, "bulk"); }
  // Whether LZ4 is tried at all (the source turns it off while encoding, not the link, is the limit).
  Napi::Value Lz4(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), lz4_); }
  void SetLz4(const Napi::CallbackInfo& info, const Napi::Value& value) { lz4_ = ToBool(value, "lz4"); }

  EncodeJob Prepare(const Napi::CallbackInfo& info, Keep* keep);
  Napi::Value Encode(const Napi::CallbackInfo& info);
  Napi::Value EncodeSync(const Napi::CallbackInfo& info) {
    EncodeJob job = Prepare(info, nullptr);
    return EncodeTuple(info.Env(), Run(job));
  }

  uint8_t* SlotBytes(uint64_t s) const { return bytes_.data() + s * pageSize_; }

  // CLOCK: new pages enter unreferenced, a referenced page gets one more pass.
  uint32_t AllocateSlot() {
    for (;;) {
      const uint32_t s = static_cast<uint32_t>(hand_);
      hand_ = hand_ + 1 == slots_ ? 0 : hand_ + 1;
      const uint32_t page = slotPage_[s];
      if (page == kNone) return s;
      if (slotReferenced_[s]) {
        slotReferenced_[s] = 0;
        continue;
      }
      slotOf_[page] = 0;
      slotPage_[s] = kNone;
      return s;
    }
  }

  void Drop(uint32_t i) {
    if (slots_ == 0 || slotOf_[i] == 0) return;
    const uint32_t s = slotOf_[i] - 1;
    slotPage_[s] = kNone;
    slotReferenced_[s] = 0;
    slotOf_[i] = 0;
  }

  // `unchanged`: S is known to equal the slot's bytes already (an empty DELTA), so no copy. In bulk
  // mode a page not cached yet enters only an empty slot under the hand: round 1 fills the cache once
  // and evicts nothing, rather than copying every page of the region through it.
  void Remember(uint32_t i, const uint8_t* snapshot, uint64_t hash, bool unchanged, bool bulk) {
    if (slots_ == 0) return;
    if (bulk && slotOf_[i] == 0 && slotPage_[hand_] != kNone) return;
    uint32_t s;
    if (slotOf_[i] != 0) {
      s = slotOf_[i] - 1;
      if (!unchanged) std::memcpy(SlotBytes(s), snapshot, static_cast<size_t>(pageSize_));
      slotHash_[s] = hash;
    } else {
      s = AllocateSlot();
      slotPage_[s] = i;
      slotHash_[s] = hash;
      slotReferenced_[s] = 0;
      std::memcpy(SlotBytes(s), snapshot, static_cast<size_t>(pageSize_));
      slotOf_[i] = s + 1;
    }
    dupIndex_[hash & (dupSize_ - 1)] = s;
  }

  // The page to encode: for a file mapping, read with pread in runs of consecutive pages into stage_.
  // A page the mapping has not touched yet costs a fault and a shadow page-table update on first
  // access (about 0.3 s per GiB in this VM, the sender's largest cost); pread copies from the page
  // cache at memory speed into a buffer that stays hot. A failed read falls back to the mapping.
  const uint8_t* LivePage(const EncodeJob& job, size_t k, uint64_t* stagedFirst, uint64_t* stagedCount) {
    const uint64_t P = pageSize_;
    const uint64_t i = job.indices[k];
    if (job.fd < 0) return job.region + i * P;
    if (i < *stagedFirst || i >= *stagedFirst + *stagedCount) {
      uint64_t run = 1;
      while (run < stagePages_ && k + run < job.indices.size() && job.indices[k + run] == i + run) ++run;
      *stagedFirst = i;
      *stagedCount = ReadFully(job.fd, stage_.get(), run * P, i * P) ? run : 0;
    }
    return *stagedCount > 0 ? stage_.get() + (i - *stagedFirst) * P : job.region + i * P;
  }

  static bool ReadFully(int fd, uint8_t* to, uint64_t length, uint64_t offset) {
    for (uint64_t done = 0; done < length;) {
      const ssize_t n = pread(fd, to + done, static_cast<size_t>(length - done), static_cast<off_t>(offset + done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      done += static_cast<uint64_t>(n);
    }
    return true;
  }

  static constexpr uint64_t kStageBytes = uint64_t{1} << 20;
  uint64_t pageSize_ = 0, pageCount_ = 0, slots_ = 0, dupSize_ = 0, hand_ = 0, stagePages_ = 0;
  Buffer<uint8_t> stage_;
  bool bulk_ = false;
  bool lz4_ = true;
  uint64_t zeroHash_ = 0;
  CacheArena bytes_;                // slots_ x pageSize_: what the target holds for each slot's page
  Buffer<uint32_t> slotPage_;       // page index or kNone (EMPTY)
  Buffer<uint64_t> slotHash_;
  Buffer<uint8_t> slotReferenced_;
  Buffer<uint32_t> slotOf_;         // pageCount_ entries: slot + 1, or 0 (NONE)
  Buffer<uint32_t> dupIndex_;       // dupSize_ entries: slot or kNone, by hash mod dupSize_
  Buffer<uint8_t> delta_;           // floor(pageSize / 4): the longest DELTA that is a candidate
  Buffer<uint8_t> lz4Out_;          // Lz4CompressBound(pageSize)
  std::unique_ptr<Lz4Table> lz4Table_;
  bool busy_ = false;
};

EncodeCounts PageEncoder::Run(const EncodeJob& job) {
  const uint64_t P = pageSize_;
  const size_t ps = static_cast<size_t>(P);
  const uint64_t deltaLimit = P / 4;
  const uint64_t lz4Limit = P - P / 8;
  EncodeCounts c;
  uint64_t pos = 0;
  uint64_t stagedFirst = 0, stagedCount = 0;
  for (size_t k = 0; k < job.indices.size(); ++k) {
    const uint32_t i = job.indices[k];
    const uint8_t* live = LivePage(job, k, &stagedFirst, &stagedCount);
    uint8_t* rec = job.out + pos;

    // 1. A zero page (read live: zero is zero, whenever it was read).
    if (IsZero(live, P)) {
      Drop(i);
      job.sent[i] = zeroHash_;
      if (job.skipZero) {
        ++c.skipped;
        continue;
      }
      Store32(rec, i);
      rec[4] = kEncZero;
      rec[5] = rec[6] = rec[7] = 0;
      Store32(rec + 8, 0);
      Store64(rec + 12, zeroHash_);
      pos += kHeaderSize;
      ++c.zero;
      ++c.records;
      continue;
    }

    // 2. The snapshot S, copied once into the RAW payload's place and hashed as it is copied; all
    // that follows reads S, never the live page, which a writer may be changing.
    uint8_t* snapshot = rec + kHeaderSize;
    const uint64_t hash = Xxh64Copy(snapshot, live, ps);

    // 3. Candidates; the smallest payload wins, the earlier one on a tie.
    uint8_t encoding = kEncRaw;
    uint64_t length = P;
    uint32_t dupFrom = 0;
    if (slots_ > 0) {
      int64_t deltaLength = -1;
      if (slotOf_[i] != 0) {
        const uint32_t s = slotOf_[i] - 1;
        slotReferenced_[s] = 1;
        deltaLength = XbzrleEncode(SlotBytes(s), snapshot, ps, delta_.get(), static_cast<size_t>(deltaLimit));
        if (deltaLength >= 0) {
          encoding = kEncDelta;
          length = static_cast<uint64_t>(deltaLength);
        }
      }
      // Not for pages under 4 bytes: a DUP payload would be larger than the page, and every record
      // must fit the pageSize + 20 bytes per page that out is checked to hold.
      if ((deltaLength < 0 || deltaLength > 4) && P >= 4) {
        // Equal bytes, not only an equal hash: XXH64 collisions can be made on purpose.
        const uint32_t t = dupIndex_[hash & (dupSize_ - 1)];
        if (t != kNone && slotPage_[t] != kNone && slotHash_[t] == hash &&
            std::memcmp(SlotBytes(t), snapshot, ps) == 0) {
          encoding = kEncDup;
          length = 4;
          dupFrom = slotPage_[t];
          slotReferenced_[t] = 1;
        }
      }
    }
    if (encoding == kEncRaw && job.lz4 && lz4Table_ && !LooksIncompressible(snapshot, ps)) {
      // Only when nothing else fits: DELTA and DUP are at most P/4, and LZ4 must save P/8.
      const size_t n = Lz4CompressPage(snapshot, ps, lz4Out_.get(), *lz4Table_);
      if (n != 0 && n <= lz4Limit) {
        encoding = kEncLz4;
        length = n;
      }
    }

    // 4. The record, sentHashes, then remember(S) while S is still in place; the smaller payloads
    // then move over it.
    Store32(rec, i);
    rec[4] = encoding;
    rec[5] = rec[6] = rec[7] = 0;
    Store32(rec + 8, static_cast<uint32_t>(length));
    Store64(rec + 12, hash);
    job.sent[i] = hash;
    Remember(i, snapshot, hash, encoding == kEncDelta && length == 0, job.bulk);
    switch (encoding) {
      case kEncDelta:
        std::memcpy(snapshot, delta_.get(), static_cast<size_t>(length));
        ++c.delta;
        break;
      case kEncDup:
        Store32(snapshot, dupFrom);
        ++c.dup;
        break;
      case kEncLz4:
        std::memcpy(snapshot, lz4Out_.get(), static_cast<size_t>(length));
        ++c.lz4;
        break;
      default:
        ++c.raw;
        break;
    }
    pos += kHeaderSize + length;
    ++c.records;
  }
  c.bytes = pos;
  return c;
}

// encode / encodeSync(region, indices, skipZero, out, sentHashes): everything is checked here, on the
// JS thread, before any state changes.
EncodeJob PageEncoder::Prepare(const Napi::CallbackInfo& info, Keep* keep) {
  Napi::Env env = info.Env();
  const char* busy = "the encoder is busy: encode batches one at a time";
  if (busy_) throw Napi::Error::New(env, busy);
  RegionSpan region = ReadRegion(Arg(info, 0), "region", keep);  // first: it may run JS
  if (busy_) throw Napi::Error::New(env, busy);
  TypedSpan<uint32_t> indices = ToU32(Arg(info, 1), "indices");
  const bool skipZero = ToBool(Arg(info, 2), "skipZero");
  TypedSpan<uint8_t> out = ToU8(Arg(info, 3), "out");
  TypedSpan<uint64_t> sent = ToBigU64(Arg(info, 4), "sentHashes");

  const uint64_t P = pageSize_, N = pageCount_;
  const uint64_t pagesBytes = CheckPages(env, region, P, N);
  if (sent.length < N) {
    ThrowRange(env, "sentHashes has " + std::to_string(sent.length) + " slots, fewer than pageCount " +
                        std::to_string(N));
  }
  if (out.length / (P + kHeaderSize) < indices.length) {
    ThrowRange(env, "out (" + std::to_string(out.length) + " bytes) is too small: " +
                        std::to_string(indices.length) + " pages need " + std::to_string(indices.length) +
                        " * (pageSize + 20) bytes");
  }
  const uint64_t sentBytes = sent.length * 8, indexBytes = indices.length * 4;
  if (Overlaps(out.data, out.length, region.data, pagesBytes)) ThrowRange(env, "out must not overlap the region's pages");
  if (Overlaps(out.data, out.length, sent.data, sentBytes)) ThrowRange(env, "out must not overlap sentHashes");
  if (Overlaps(indices.data, indexBytes, out.data, out.length)) ThrowRange(env, "indices must not overlap out");
  if (Overlaps(indices.data, indexBytes, sent.data, sentBytes)) ThrowRange(env, "indices must not overlap sentHashes");

  EncodeJob job;
  try {
    job.indices.assign(indices.data, indices.data + indices.length);
  } catch (const std::bad_alloc&) {
    ThrowOutOfMemory(env, "a copy of " + std::to_string(indices.length) + " indices");
  }
  for (uint64_t k = 0; k < job.indices.size(); ++k) {
    if (job.indices[k] >= N) {
      ThrowRange(env, "indices[" + std::to_string(k) + "] = " + std::to_string(job.indices[k]) +
                          " is not below pageCount " + std::to_string(N));
    }
  }
  job.region = region.data;
  job.fd = region.fd;
  job.skipZero = skipZero;
  job.bulk = bulk_;
  job.lz4 = lz4_;
  job.out = out.data;
  job.sent = sent.data;
  if (keep != nullptr) {
    Hold(keep, Arg(info, 1));
    Hold(keep, Arg(info, 3));
    Hold(keep, Arg(info, 4));
  }
  return job;
}

class EncodeWorker : public PromiseWorker {
 public:
  EncodeWorker(Napi::Env env, PageEncoder* encoder, Napi::Object encoderObject, EncodeJob job, Keep keep)
      : PromiseWorker(env, "pagewire:encode"),
        encoder_(encoder),
        encoderRef_(Napi::Persistent(encoderObject)),
        job_(std::move(job)),
        keep_(std::move(keep)) {}
  void Execute() override { counts_ = encoder_->Run(job_); }
  void OnOK() override {
    encoder_->Settled();
    PromiseWorker::OnOK();
  }
  void OnError(const Napi::Error& e) override {
    encoder_->Settled();
    PromiseWorker::OnError(e);
  }

 private:
  Napi::Value Result() override { return EncodeTuple(Env(), counts_); }
  PageEncoder* encoder_;
  Napi::ObjectReference encoderRef_;  // keeps the encoder (and its cache) alive
  EncodeJob job_;
  Keep keep_;
  EncodeCounts counts_;
};

Napi::Value PageEncoder::Encode(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Keep keep;
  EncodeJob job = Prepare(info, &keep);
  Napi::Promise promise = QueueWorker(new EncodeWorker(env, this, Value(), std::move(job), std::move(keep)));
  busy_ = true;
  return promise;
}

// ---------------------------------------------------------------------------------------------
// Decoder: applyPages / applyPagesSync(sink, pageSize, pageCount, records, recordCount, heldHashes
//   [, stream, streams]) -> [status, pageIndexOrRecordNumber, recordsApplied]
// records comes from the network: every length and index in it is checked before use, and every
// field is read once. A record is verified before the sink sees it, so a bad page is never written.
//
// A sink offers: Begin(index) before a record's page is built; Peek(index) the page's current
// contents (read only); ReadPage(index) the same in a scratch page that may be changed; Scratch() a
// page to build into; Write(index, page) / WriteZero(index); Flush(). Pages from Peek, ReadPage and
// Scratch stay valid until that page is written out (the file sink keeps them until its Flush).

struct ApplyOutcome {
  uint32_t status;
  uint64_t value;
  uint64_t applied;
};

// Which of `streams` parallel streams carries page p: stripes of 256 pages, dealt round-robin
// (docs/PROTOCOL.md section 2, "Parallel streams").
constexpr uint64_t kStripePages = 256;
uint64_t StreamOfPage(uint32_t page, uint64_t streams) { return (page / kStripePages) % streams; }

// The ownership pass, over the headers only and before any record is applied: the byte offset of the
// first record (as far as headers are intact) that writes a page of another stream, or whose DUP copies
// one; len when there is none. Two streams writing one page could tear it while its hash reads as
// verified. Malformed records are left to the decoding pass, which names what is wrong with them.
uint64_t FirstRecordOffStream(const uint8_t* records, uint64_t len, uint64_t recordCount, uint64_t stream,
                              uint64_t streams) {
  uint64_t pos = 0;
  for (uint64_t r = 0; r < recordCount && pos <= len && len - pos >= kHeaderSize; ++r) {
    const uint8_t* rec = records + pos;
    const uint32_t payloadLength = Load32(rec + 8);
    if (StreamOfPage(Load32(rec), streams) != stream) return pos;
    if (rec[4] == kEncDup && payloadLength == 4 && len - pos - kHeaderSize >= 4 &&
        StreamOfPage(Load32(rec + kHeaderSize), streams) != stream) {
      return pos;
    }
    pos += kHeaderSize + payloadLength;
  }
  return len;
}

template <typename Sink>
ApplyOutcome ApplyRecords(uint64_t pageSize, uint64_t pageCount, const uint8_t* records, uint64_t len,
                          uint64_t recordCount, uint64_t stream, uint64_t streams, uint64_t* held, Sink& sink) {
  if (streams > 1) {
    const uint64_t off = FirstRecordOffStream(records, len, recordCount, stream, streams);
    if (off != len) return ApplyOutcome{kWrongStream, off, 0};  // the whole batch is refused
  }
  const size_t ps = static_cast<size_t>(pageSize);
  const uint64_t zeroHash = Xxh64Zeros(ps);
  uint64_t pos = 0;
  uint64_t applied = 0;
  auto result = [&](uint32_t status, uint64_t value) {
    sink.Flush();  // what was verified before the bad record is applied, as the contract says
    return ApplyOutcome{status, value, applied};
  };

  for (uint64_t r = 0; r < recordCount; ++r) {
    if (len - pos < kHeaderSize) return result(kTruncated, r);
    const uint8_t* rec = records + pos;
    const uint32_t index = Load32(rec);
    const uint8_t encoding = rec[4];
    const uint8_t reserved8 = rec[5];
    const uint16_t reserved16 = Load16(rec + 6);
    const uint32_t payloadLength = Load32(rec + 8);
    const uint64_t hash = Load64(rec + 12);

    if (index >= pageCount) return result(kIndexOutOfRange, index);
    if (encoding > kEncLz4 || reserved8 != 0 || reserved16 != 0) return result(kBadEncoding, index);
    bool lengthOk = false;
    switch (encoding) {
      case kEncZero: lengthOk = payloadLength == 0; break;
      case kEncRaw: lengthOk = payloadLength == pageSize; break;
      case kEncDelta: lengthOk = payloadLength <= pageSize; break;
      case kEncDup: lengthOk = payloadLength == 4; break;
      default: lengthOk = payloadLength >= 1 && payloadLength < pageSize; break;  // LZ4
    }
    if (!lengthOk) return result(kBadLength, index);
    if (len - pos - kHeaderSize < payloadLength) return result(kTruncated, index);
    const uint8_t* payload = rec + kHeaderSize;

    sink.Begin(index);
    switch (encoding) {
      case kEncZero:
        if (hash != zeroHash) return result(kChecksumMismatch, index);
        sink.WriteZero(index);
        break;
      case kEncRaw:
        if (Xxh64(payload, ps) != hash) return result(kChecksumMismatch, index);
        sink.Write(index, payload);
        break;
      case kEncDelta:
        if (payloadLength == 0) {
          // Unchanged: check what the target holds; there is nothing to write.
          if (Xxh64(sink.Peek(index), ps) != hash) return result(kChecksumMismatch, index);
        } else {
          uint8_t* page = sink.ReadPage(index);
          if (!XbzrleDecode(payload, payloadLength, page, ps)) return result(kBadPayload, index);
          if (Xxh64(page, ps) != hash) return result(kChecksumMismatch, index);
          sink.Write(index, page);
        }
        break;
      case kEncDup: {
        const uint32_t from = Load32(payload);
        if (from >= pageCount) return result(kIndexOutOfRange, from);
        const uint8_t* page = sink.Peek(from);
        if (Xxh64(page, ps) != hash) return result(kChecksumMismatch, index);
        sink.Write(index, page);
        break;
      }
      default: {  // LZ4
        uint8_t* page = sink.Scratch();
        if (!Lz4DecompressPage(payload, payloadLength, page, ps)) return result(kBadPayload, index);
        if (Xxh64(page, ps) != hash) return result(kChecksumMismatch, index);
        sink.Write(index, page);
        break;
      }
    }
    held[index] = hash;
    pos += kHeaderSize + payloadLength;
    ++applied;
  }
  if (pos != len) return result(kTrailingBytes, recordCount);
  return result(kOk, 0);
}

// Pages in memory, written in place; one scratch page (allocated on first use) for pages being built.
class MemorySink {
 public:
  MemorySink(uint8_t* base, uint64_t pageSize) : base_(base), pageSize_(pageSize) {}
  void Begin(uint32_t) {}
  const uint8_t* Peek(uint32_t index) { return Page(index); }
  uint8_t* ReadPage(uint32_t index) {
    uint8_t* s = Scratch();
    std::memcpy(s, Page(index), static_cast<size_t>(pageSize_));
    return s;
  }
  uint8_t* Scratch() {
    if (!scratch_) scratch_.reset(new uint8_t[static_cast<size_t>(pageSize_)]);
    return scratch_.get();
  }
  void Write(uint32_t index, const uint8_t* page) {
    uint8_t* dst = Page(index);
    if (dst != page) std::memcpy(dst, page, static_cast<size_t>(pageSize_));  // DUP of itself: no-op
  }
  void WriteZero(uint32_t index) { std::memset(Page(index), 0, static_cast<size_t>(pageSize_)); }
  void Flush() {}

 private:
  uint8_t* Page(uint32_t index) const { return base_ + static_cast<uint64_t>(index) * pageSize_; }
  uint8_t* base_;
  uint64_t pageSize_;
  std::unique_ptr<uint8_t[]> scratch_;
};

// Writes pages with pwritev into the page cache: measured 5x-15x faster than storing through a
// MAP_SHARED mapping of a new file, which takes a fault and a page_mkwrite per page. Runs of
// consecutive pages go out in one call. Built pages live in an arena until the Flush that writes
// them; the arena is capped (a Flush when it is full), so a batch of small LZ4 records cannot make it
// grow with the batch.
class FileSink {
 public:
  FileSink(int fd, uint64_t pageSize)
      : fd_(fd), pageSize_(pageSize), arenaMax_(std::max<uint64_t>(1, kArenaBytes / pageSize)) {}

  void Begin(uint32_t index) {
    if (!iov_.empty() && index != first_ + iov_.size()) Flush();  // the run breaks
  }
  const uint8_t* Peek(uint32_t index) { return ReadPage(index); }
  uint8_t* ReadPage(uint32_t index) {
    Flush();  // the file must hold every page verified so far
    uint8_t* page = Scratch();
    ReadAt(index, page);
    return page;
  }
  uint8_t* Scratch() {
    if (used_ == arenaMax_) Flush();
    if (used_ == arena_.size()) {
      std::unique_ptr<uint8_t[]> page(new uint8_t[static_cast<size_t>(pageSize_)]);
      arena_.push_back(std::move(page));
    }
    return arena_[used_++].get();
  }
  void Write(uint32_t index, const uint8_t* page) {
    FlushZeros();
    if (iov_.empty()) first_ = index;  // Begin flushed a broken run
    iov_.push_back({const_cast<uint8_t*>(page), static_cast<size_t>(pageSize_)});
  }
  // A zero page becomes a hole: it costs the target neither memory (tmpfs) nor disk blocks, and the
  // file reads back zeros there. Consecutive zero pages are punched in one call.
  void WriteZero(uint32_t index) {
    FlushPages();
    if (zeroCount_ > 0 && index == zeroFirst_ + zeroCount_) {
      ++zeroCount_;
      return;
    }
    FlushZeros();
    zeroFirst_ = index;
    zeroCount_ = 1;
  }
  void Flush() {
    FlushPages();
    FlushZeros();
  }

 private:
  static constexpr uint64_t kArenaBytes = uint64_t{16} << 20;

  void FlushZeros() {
    if (zeroCount_ == 0) return;
    const uint64_t offset = zeroFirst_ * pageSize_, length = zeroCount_ * pageSize_;
    zeroCount_ = 0;
    const char* call = nullptr;
    if (const int err = PunchZeros(fd_, offset, length, &call)) {
      throw IoError(std::string("writing zero pages failed: ") + call + ": " + strerror(err));
    }
  }

  void FlushPages() {
    size_t done = 0;
    uint64_t offset = first_ * pageSize_;
    while (done < iov_.size()) {
      const int count = static_cast<int>(std::min<size_t>(iov_.size() - done, IOV_MAX));
      ssize_t n = pwritev(fd_, iov_.data() + done, count, static_cast<off_t>(offset));
      if (n < 0) {
        if (errno == EINTR) continue;
        throw IoError(std::string("writing pages failed: ") + strerror(errno));
      }
      if (n == 0) throw IoError("writing pages failed: the file took no bytes");
      offset += static_cast<uint64_t>(n);
      // Skip what was written; a short write leaves part of one page to go again.
      while (n > 0) {
        iovec& v = iov_[done];
        if (static_cast<size_t>(n) >= v.iov_len) {
          n -= static_cast<ssize_t>(v.iov_len);
          ++done;
        } else {
          v.iov_base = static_cast<uint8_t*>(v.iov_base) + n;
          v.iov_len -= static_cast<size_t>(n);
          n = 0;
        }
      }
    }
    iov_.clear();
    used_ = 0;  // every arena page has been written (or was never queued)
  }

  void ReadAt(uint32_t index, uint8_t* page) {
    uint64_t offset = static_cast<uint64_t>(index) * pageSize_;
    size_t done = 0;
    const size_t want = static_cast<size_t>(pageSize_);
    while (done < want) {
      ssize_t n = pread(fd_, page + done, want - done, static_cast<off_t>(offset + done));
      if (n < 0) {
        if (errno == EINTR) continue;
        throw IoError("reading a page back failed: page " + std::to_string(index) + ": " + strerror(errno));
      }
      if (n == 0) {
        throw IoError("reading a page back failed: the file ends inside page " + std::to_string(index));
      }
      done += static_cast<size_t>(n);
    }
  }

  int fd_;
  uint64_t pageSize_;
  uint64_t arenaMax_;
  uint64_t first_ = 0;
  std::vector<iovec> iov_;
  std::vector<std::unique_ptr<uint8_t[]>> arena_;
  size_t used_ = 0;
  uint64_t zeroFirst_ = 0, zeroCount_ = 0;
};

struct ApplyJob {
  bool toFile = false;
  int fd = -1;
  uint8_t* base = nullptr;
  uint64_t pageSize = 0, pageCount = 0;
  const uint8_t* records = nullptr;
  uint64_t length = 0, recordCount = 0;
  uint64_t stream = 0, streams = 1;
  uint64_t* held = nullptr;
};

// The work, on whichever thread: no napi calls; errors come back as *error.
bool RunApply(const ApplyJob& job, ApplyOutcome* outcome, std::string* error) {
  try {
    if (job.toFile) {
      FileSink sink(job.fd, job.pageSize);
      *outcome = ApplyRecords(job.pageSize, job.pageCount, job.records, job.length, job.recordCount,
                              job.stream, job.streams, job.held, sink);
    } else {
      MemorySink sink(job.base, job.pageSize);
      *outcome = ApplyRecords(job.pageSize, job.pageCount, job.records, job.length, job.recordCount,
                              job.stream, job.streams, job.held, sink);
    }
    return true;
  } catch (const IoError& e) {
    *error = e.what();
  } catch (const std::bad_alloc&) {
    *error = "out of memory: a scratch page of " + std::to_string(job.pageSize) + " bytes";
  }
  return false;
}

Napi::Array ApplyTuple(Napi::Env env, const ApplyOutcome& o) {
  return NumberTuple(env, {static_cast<double>(o.status), static_cast<double>(o.value), static_cast<double>(o.applied)});
}

ApplyJob PrepareApply(const Napi::CallbackInfo& info, Keep* keep) {
  Napi::Env env = info.Env();
  ApplyJob job;
  RegionSpan region;
  const Napi::Value sinkArg = Arg(info, 0);
  if (sinkArg.IsNumber()) {
    job.toFile = true;
    job.fd = static_cast<int>(ToIndex(sinkArg, "fd", INT32_MAX));
  } else {
    region = ReadRegion(sinkArg, "sink", keep);  // first: it may run JS
    if (!region.writable) ThrowType(env, "sink is a read-only mapping");
  }
  job.pageSize = ToPageSize(Arg(info, 1));
  job.pageCount = ToIndex(Arg(info, 2), "pageCount", kMaxPageCount);
  TypedSpan<uint8_t> records = ToU8(Arg(info, 3), "records");
  job.recordCount = ToIndex(Arg(info, 4), "recordCount");
  TypedSpan<uint64_t> held = ToBigU64(Arg(info, 5), "heldHashes");
  // Left out: the only stream, which owns every page.
  if (!Arg(info, 7).IsUndefined()) {
    job.streams = ToIndex(Arg(info, 7), "streams", kMaxPageCount);
    if (job.streams == 0) ThrowRange(env, "streams must be at least 1");
  }
  if (!Arg(info, 6).IsUndefined()) job.stream = ToIndex(Arg(info, 6), "stream", job.streams - 1);

  if (held.length < job.pageCount) {
    ThrowRange(env, "heldHashes has " + std::to_string(held.length) + " slots, fewer than pageCount " +
                        std::to_string(job.pageCount));
  }
  const uint64_t heldBytes = held.length * 8;
  if (Overlaps(held.data, heldBytes, records.data, records.length)) {
    ThrowRange(env, "heldHashes must not overlap records");
  }
  if (!job.toFile) {
    const uint64_t pagesBytes = CheckPages(env, region, job.pageSize, job.pageCount, "sink");
    if (Overlaps(records.data, records.length, region.data, pagesBytes)) {
      ThrowRange(env, "records must not overlap the sink's pages");
    }
    if (Overlaps(held.data, heldBytes, region.data, pagesBytes)) {
      ThrowRange(env, "heldHashes must not overlap the sink's pages");
    }
    job.base = region.data;
  }
  job.records = records.data;
  job.length = records.length;
  job.held = held.data;
  if (keep != nullptr) {
    Hold(keep, Arg(info, 3));
    Hold(keep, Arg(info, 5));
  }
  return job;
}

Napi::Value ApplyPagesSync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ApplyJob job = PrepareApply(info, nullptr);
  ApplyOutcome outcome;
  std::string error;
  if (!RunApply(job, &outcome, &error)) throw Napi::Error::New(env, error);
  return ApplyTuple(env, outcome);
}

class ApplyWorker : public PromiseWorker {
 public:
  ApplyWorker(Napi::Env env, ApplyJob job, Keep keep)
      : PromiseWorker(env, "pagewire:apply"), job_(job), keep_(std::move(keep)) {}
  void Execute() override {
    std::string error;
    if (!RunApply(job_, &outcome_, &error)) SetError(error);
  }

 private:
  Napi::Value Result() override { return ApplyTuple(Env(), outcome_); }
  ApplyJob job_;
  Keep keep_;
  ApplyOutcome outcome_{};
};

Napi::Value ApplyPages(const Napi::CallbackInfo& info) {
  Keep keep;
  ApplyJob job = PrepareApply(info, &keep);
  return QueueWorker(new ApplyWorker(info.Env(), job, std::move(keep)));
}

// ---------------------------------------------------------------------------------------------
// startWriteback(fd): starts writing the file's dirty pages back (sync_file_range) on a libuv pool
// thread, since submitting the I/O can block for long; the promise settles when the call returns.
class WritebackWorker : public PromiseWorker {
 public:
  WritebackWorker(Napi::Env env, int fd) : PromiseWorker(env, "pagewire:writeback"), fd_(fd) {}
  void Execute() override {
#ifdef __linux__
    if (sync_file_range(fd_, 0, 0, SYNC_FILE_RANGE_WRITE) != 0) SetError(strerror(errno));
#endif
  }

 private:
  Napi::Value Result() override { return Env().Undefined(); }
  int fd_;
};

Napi::Value StartWriteback(const Napi::CallbackInfo& info) {
  uint64_t fd = ToIndex(Arg(info, 0), "fd", INT32_MAX);
  return QueueWorker(new WritebackWorker(info.Env(), static_cast<int>(fd)));
}

// ---------------------------------------------------------------------------------------------
// Kernels, for the micro-benchmarks and the shared test vectors: page k of a buffer is bytes
// [k * pageSize, (k + 1) * pageSize), pages = floor(byteLength / pageSize). Outputs must not overlap
// inputs.

// Whether encoding k, n bytes at k * stride, lies inside encoded (without overflow).
inline bool EncodedRange(const TypedSpan<uint8_t>& encoded, uint64_t stride, uint64_t k, int32_t n) {
  if (stride != 0 && k > encoded.length / stride) return false;
  return static_cast<uint64_t>(n) <= encoded.length - k * stride;  // k * stride <= encoded.length
}

// lengths covers the pages, and every encoding used lies inside encoded. The loops read each length
// once and check it again (EncodedRange): lengths may be shared memory.
void CheckEncodedRanges(Napi::Env env, const TypedSpan<uint8_t>& encoded, uint64_t stride,
                        const TypedSpan<int32_t>& lengths, uint64_t count, bool negativeSkips) {
  if (lengths.length < count) {
    ThrowRange(env, "lengths has " + std::to_string(lengths.length) + " entries, fewer than the " +
                        std::to_string(count) + " pages");
  }
  for (uint64_t k = 0; k < count; ++k) {
    const int32_t n = lengths.data[k];
    if (n < 0 && !negativeSkips) ThrowRange(env, "lengths[" + std::to_string(k) + "] is negative");
    if (n <= 0) continue;
    if (!EncodedRange(encoded, stride, k, n)) {
      ThrowRange(env, "encoding " + std::to_string(k) + " (" + std::to_string(n) + " bytes at " +
                          std::to_string(k) + " * stride " + std::to_string(stride) + ") is beyond encoded's " +
                          std::to_string(encoded.length) + " bytes");
    }
  }
}

// zeroPageCount(pages, pageSize) -> how many pages are all zero bytes
Napi::Value ZeroPageCount(const Napi::CallbackInfo& info) {
  TypedSpan<uint8_t> pages = ToU8(Arg(info, 0), "pages");
  const uint64_t P = ToPageSize(Arg(info, 1));
  const uint64_t count = pages.length / P;
  uint64_t zero = 0;
  for (uint64_t k = 0; k < count; ++k) zero += IsZero(pages.data + k * P, P) ? 1 : 0;
  return Napi::Number::New(info.Env(), static_cast<double>(zero));
}

// xbzrleEncodePages(oldPages, newPages, pageSize, limit, out, lengths) -> sum of the lengths that fit
Napi::Value XbzrleEncodePages(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TypedSpan<uint8_t> oldPages = ToU8(Arg(info, 0), "oldPages");
  TypedSpan<uint8_t> newPages = ToU8(Arg(info, 1), "newPages");
  const uint64_t P = ToPageSize(Arg(info, 2));
  const uint64_t limit = ToIndex(Arg(info, 3), "limit", INT32_MAX);
  TypedSpan<uint8_t> out = ToU8(Arg(info, 4), "out");
  TypedSpan<int32_t> lengths = ToI32(Arg(info, 5), "lengths");
  const uint64_t count = newPages.length / P;
  if (oldPages.length / P < count) {
    ThrowRange(env, "oldPages has fewer pages than newPages (" + std::to_string(count) + ")");
  }
  if (limit > 0 && out.length / limit < count) {
    ThrowRange(env, "out (" + std::to_string(out.length) + " bytes) is smaller than pages * limit");
  }
  if (lengths.length < count) ThrowRange(env, "lengths has fewer entries than the " + std::to_string(count) + " pages");
  const uint64_t lengthBytes = lengths.length * 4;
  if (Overlaps(out.data, out.length, oldPages.data, oldPages.length) ||
      Overlaps(out.data, out.length, newPages.data, newPages.length) ||
      Overlaps(out.data, out.length, lengths.data, lengthBytes) ||
      Overlaps(lengths.data, lengthBytes, oldPages.data, oldPages.length) ||
      Overlaps(lengths.data, lengthBytes, newPages.data, newPages.length)) {
    ThrowRange(env, "out and lengths must not overlap each other or the pages");
  }
  uint64_t sum = 0;
  for (uint64_t k = 0; k < count; ++k) {
    const int64_t n = XbzrleEncode(oldPages.data + k * P, newPages.data + k * P, static_cast<size_t>(P),
                                   out.data + k * limit, static_cast<size_t>(limit));
    lengths.data[k] = static_cast<int32_t>(n);
    if (n > 0) sum += static_cast<uint64_t>(n);
  }
  return Napi::Number::New(env, static_cast<double>(sum));
}

// lz4CompressPages(pages, pageSize, out, stride, lengths) -> sum of the lengths
Napi::Value Lz4CompressPages(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TypedSpan<uint8_t> pages = ToU8(Arg(info, 0), "pages");
  const uint64_t P = ToPageSize(Arg(info, 1));
  TypedSpan<uint8_t> out = ToU8(Arg(info, 2), "out");
  const uint64_t stride = ToIndex(Arg(info, 3), "stride");
  TypedSpan<int32_t> lengths = ToI32(Arg(info, 4), "lengths");
  const uint64_t count = pages.length / P;
  if (stride > 0 && out.length / stride < count) {
    ThrowRange(env, "out (" + std::to_string(out.length) + " bytes) is smaller than pages * stride");
  }
  if (lengths.length < count) ThrowRange(env, "lengths has fewer entries than the " + std::to_string(count) + " pages");
  const uint64_t lengthBytes = lengths.length * 4;
  if (Overlaps(out.data, out.length, pages.data, pages.length) ||
      Overlaps(out.data, out.length, lengths.data, lengthBytes) ||
      Overlaps(lengths.data, lengthBytes, pages.data, pages.length)) {
    ThrowRange(env, "out and lengths must not overlap each other or the pages");
  }
  const size_t bound = Lz4CompressBound(static_cast<size_t>(P));
  Buffer<uint8_t> scratch;
  std::unique_ptr<Lz4Table> table;
  if (bound > 0 && count > 0) {
    scratch = Allocate<uint8_t>(bound, false);
    if (!scratch) ThrowOutOfMemory(env, "an LZ4 buffer of " + std::to_string(bound) + " bytes");
    try {
      table.reset(new Lz4Table());
    } catch (const std::bad_alloc&) {
      ThrowOutOfMemory(env, "an LZ4 hash table");
    }
  }
  uint64_t sum = 0;
  for (uint64_t k = 0; k < count; ++k) {
    const size_t n = table ? Lz4CompressPage(pages.data + k * P, static_cast<size_t>(P), scratch.get(), *table) : 0;
    if (n != 0 && n <= stride) {
      std::memcpy(out.data + k * stride, scratch.get(), n);
      lengths.data[k] = static_cast<int32_t>(n);
      sum += n;
    } else {
      lengths.data[k] = 0;
    }
  }
  return Napi::Number::New(env, static_cast<double>(sum));
}

// The two decode kernels: (encoded, stride, lengths, pages, pageSize) -> -1, or the first block that
// does not decode. Block k is encoded[k * stride, + lengths[k]) and decodes into pages[k] in place.
// XBZRLE skips negative lengths (did not fit; 0 is an unchanged page), LZ4 skips 0 (not compressed).
using DecodeOne = bool (*)(const uint8_t* payload, size_t length, uint8_t* page, size_t pageSize);

Napi::Value DecodePagesKernel(const Napi::CallbackInfo& info, bool negativeSkips, DecodeOne decode) {
  Napi::Env env = info.Env();
  TypedSpan<uint8_t> encoded = ToU8(Arg(info, 0), "encoded");
  const uint64_t stride = ToIndex(Arg(info, 1), "stride");
  TypedSpan<int32_t> lengths = ToI32(Arg(info, 2), "lengths");
  TypedSpan<uint8_t> pages = ToU8(Arg(info, 3), "pages");
  const uint64_t P = ToPageSize(Arg(info, 4));
  const uint64_t count = pages.length / P;
  if (Overlaps(pages.data, pages.length, encoded.data, encoded.length) ||
      Overlaps(pages.data, pages.length, lengths.data, lengths.length * 4)) {
    ThrowRange(env, "pages must not overlap encoded or lengths");
  }
  CheckEncodedRanges(env, encoded, stride, lengths, count, negativeSkips);
  for (uint64_t k = 0; k < count; ++k) {
    const int32_t n = lengths.data[k];
    if (negativeSkips ? n < 0 : n == 0) continue;
    if (n < 0 || !EncodedRange(encoded, stride, k, n)) ThrowRange(env, "lengths changed during the call");
    if (!decode(encoded.data + k * stride, static_cast<size_t>(n), pages.data + k * P, static_cast<size_t>(P))) {
      return Napi::Number::New(env, static_cast<double>(k));
    }
  }
  return Napi::Number::New(env, -1);
}

Napi::Value XbzrleDecodePages(const Napi::CallbackInfo& info) { return DecodePagesKernel(info, true, XbzrleDecode); }
Napi::Value Lz4DecompressPages(const Napi::CallbackInfo& info) { return DecodePagesKernel(info, false, Lz4DecompressPage); }


}  // namespace

void InitCodec(Napi::Env env, Napi::Object exports) {
  exports.Set("xxh64", Napi::Function::New<Xxh64Js>(env, "xxh64"));
  exports.Set("hashPages", Napi::Function::New<HashPages>(env, "hashPages"));
  exports.Set("changedPages", Napi::Function::New<ChangedPages>(env, "changedPages"));
  exports.Set("PageEncoder", PageEncoder::Define(env));
  exports.Set("applyPages", Napi::Function::New<ApplyPages>(env, "applyPages"));
  exports.Set("applyPagesSync", Napi::Function::New<ApplyPagesSync>(env, "applyPagesSync"));
  exports.Set("startWriteback", Napi::Function::New<StartWriteback>(env, "startWriteback"));
  exports.Set("zeroPageCount", Napi::Function::New<ZeroPageCount>(env, "zeroPageCount"));
  exports.Set("xbzrleEncodePages", Napi::Function::New<XbzrleEncodePages>(env, "xbzrleEncodePages"));
  exports.Set("xbzrleDecodePages", Napi::Function::New<XbzrleDecodePages>(env, "xbzrleDecodePages"));
  exports.Set("lz4CompressPages", Napi::Function::New<Lz4CompressPages>(env, "lz4CompressPages"));
  exports.Set("lz4DecompressPages", Napi::Function::New<Lz4DecompressPages>(env, "lz4DecompressPages"));
}

}  // namespace pagewire
