// writePagesToFile(region, pageSize, indices, fd, fileOffset, hashes) -> Promise<[written, zero, punched]>:
// a region's pages into a file, page p at fileOffset + p * pageSize, on a libuv pool thread, with
// hashes[p] = XXH64 of the page. hashes[p] is what the file holds at page p: a zero page is not
// written, and is punched out only where the file held data. Each run of pages is copied aside before
// it is hashed and written, so the workload may write on meanwhile: the hash is of what was written.
// Calls on disjoint pages may run side by side (positioned writes, distinct hash slots).
#include <algorithm>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "bytes.h"
#include "file_io.h"
#include "pool_work.h"
#include "region.h"
#include "xxhash64.h"

namespace pagewire {
namespace {

// A run written is at most this long: its pages are still in the cache when they are hashed and
// written.
constexpr uint64_t kRunBytes = uint64_t{1} << 20;

struct WritePagesJob {
  const uint8_t* region = nullptr;
  // The file a shared mapping maps from offset 0 (-1 for memory): its pages are read with pread.
  int regionFd = -1;
  uint64_t pageSize = 0;
  // A copy: checked once, the indices cannot change under the work (the caller's may be shared memory).
  std::vector<uint32_t> indices;
  int fd = -1;
  uint64_t fileOffset = 0;
  uint64_t* hashes = nullptr;
};

struct WritePagesOutcome {
  uint64_t written = 0, zero = 0, punched = 0;
  // The call that failed (err != 0), and the bytes it was given.
  const char* call = nullptr;
  int err = 0;
  uint64_t at = 0, length = 0;
};

// The work, on the pool thread: no napi calls. Runs of consecutive pages are staged into a buffer
// first (pread from a mapping's file, which is far cheaper than faulting the mapping in; memcpy from
// memory), so the hash recorded is always of the bytes written even while the workload writes on.
// Within a staged run, non-zero pages go to the file in one call per stretch, and zero pages are
// punched out where the file held data. Hashes are recorded once their stretch is in the file, so
// hashes[] never claims a page that a failed call did not write.
class PageFileWriter {
 public:
  explicit PageFileWriter(const WritePagesJob& job)
      : job_(job), zeroHash_(Xxh64Zeros(static_cast<size_t>(job.pageSize))),
        runMax_(std::max<uint64_t>(1, kRunBytes / job.pageSize)) {}

  WritePagesOutcome Run() {
    const uint64_t P = job_.pageSize;
    const std::vector<uint32_t>& pages = job_.indices;
    buffer_.resize(static_cast<size_t>(runMax_ * P));
    hashes_.resize(static_cast<size_t>(runMax_));
    for (size_t k = 0; k < pages.size();) {
      size_t end = k + 1;
      while (end < pages.size() && end - k < runMax_ && pages[end] == pages[end - 1] + 1) ++end;
      if (!WriteRun(pages[k], end - k)) return out_;
      k = end;
    }
    return out_;
  }

 private:
  // Pages [first, +count): staged, then each stretch of non-zero pages written and each stretch of zero
  // pages punched where needed.
  bool WriteRun(uint64_t first, uint64_t count) {
    const uint64_t P = job_.pageSize;
    if (!Stage(first, count)) return false;
    for (uint64_t i = 0; i < count;) {
      const bool zero = IsZero(buffer_.data() + i * P, P);
      uint64_t end = i + 1;
      while (end < count && IsZero(buffer_.data() + end * P, P) == zero) ++end;
      if (zero) {
        out_.zero += end - i;
        if (!Punch(first, i, end)) return false;
      } else {
        Xxh64Pages(buffer_.data() + i * P, static_cast<size_t>(P), static_cast<size_t>(end - i), hashes_.data() + i);
        out_.call = "pwrite";
        out_.at = job_.fileOffset + (first + i) * P;
        out_.length = (end - i) * P;
        out_.err = PwriteAll(job_.fd, buffer_.data() + i * P, out_.length, out_.at);
        if (out_.err != 0) return false;
        for (uint64_t j = i; j < end; ++j) job_.hashes[first + j] = hashes_[j];
        out_.written += end - i;
      }
      i = end;
    }
    return true;
  }

  // The zero pages [first + i, first + end): only those the file may hold data for are punched.
  bool Punch(uint64_t first, uint64_t i, uint64_t end) {
    const uint64_t P = job_.pageSize;
    for (uint64_t j = i; j < end;) {
      if (job_.hashes[first + j] == zeroHash_) { ++j; continue; }
      uint64_t stop = j + 1;
      while (stop < end && job_.hashes[first + stop] != zeroHash_) ++stop;
      out_.at = job_.fileOffset + (first + j) * P;
      out_.length = (stop - j) * P;
      out_.err = PunchZeros(job_.fd, out_.at, out_.length, &out_.call);
      if (out_.err != 0) return false;
      for (uint64_t k = j; k < stop; ++k) job_.hashes[first + k] = zeroHash_;
      out_.punched += stop - j;
      j = stop;
    }
    return true;
  }

  bool Stage(uint64_t first, uint64_t count) {
    const uint64_t P = job_.pageSize;
    if (job_.regionFd < 0) {
      std::memcpy(buffer_.data(), job_.region + first * P, static_cast<size_t>(count * P));
      return true;
    }
    out_.call = "pread";
    out_.at = first * P;
    out_.length = count * P;
    // A short file: it shrank under its mapping, and its bytes there are no longer the region's.
    out_.err = PreadAll(job_.regionFd, buffer_.data(), out_.length, out_.at);
    return out_.err == 0;
  }

  const WritePagesJob& job_;
  const uint64_t zeroHash_;
  const uint64_t runMax_;
  std::vector<uint8_t> buffer_;
  std::vector<uint64_t> hashes_;
  WritePagesOutcome out_;
};

class WritePagesWorker : public PromiseWorker {
 public:
  WritePagesWorker(Napi::Env env, WritePagesJob job, Keep keep)
      : PromiseWorker(env, "pagewire:writePagesToFile"), job_(std::move(job)), keep_(std::move(keep)) {}
  void Execute() override {
    try {
      out_ = PageFileWriter(job_).Run();
    } catch (const std::bad_alloc&) {
      SetError("out of memory: writing pages of " + std::to_string(job_.pageSize) + " bytes");
      return;
    }
    if (out_.err != 0) {
      SetError(std::string(out_.call) + "(fd " + std::to_string(job_.fd) + ", " + std::to_string(out_.length) +
               " bytes at " + std::to_string(out_.at) + ") failed");
    }
  }

 private:
  Napi::Value Result() override {
    return NumberTuple(Env(), {static_cast<double>(out_.written), static_cast<double>(out_.zero),
                               static_cast<double>(out_.punched)});
  }
  // A failed system call rejects as Node reports one: with its code and errno.
  void OnError(const Napi::Error& e) override {
    if (out_.err == 0) return PromiseWorker::OnError(e);
    PromiseWorker::OnError(ErrnoError(Env(), e.Message(), out_.err));
  }

  WritePagesJob job_;
  Keep keep_;
  WritePagesOutcome out_;
};

// Everything is checked here, on the JS thread, before the work starts: a bad argument throws and
// nothing changes.
Napi::Value WritePagesToFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Keep keep;
  RegionSpan region = HoldRegion(Arg(info, 0), "region", &keep);  // first: it may run JS
  WritePagesJob job;
  job.pageSize = ToPageSize(Arg(info, 1));
  TypedSpan<uint32_t> indices = ToU32(Arg(info, 2), "indices");
  job.fd = static_cast<int>(ToIndex(Arg(info, 3), "fd", INT32_MAX));
  job.fileOffset = ToIndex(Arg(info, 4), "fileOffset");
  TypedSpan<uint64_t> hashes = ToBigU64(Arg(info, 5), "hashes");

  const uint64_t P = job.pageSize, pageCount = region.byteLength / P;
  if (hashes.length < pageCount) {
    ThrowRange(env, "hashes has " + std::to_string(hashes.length) + " slots, fewer than the region's " +
                        std::to_string(pageCount) + " pages");
  }
  if (Overlaps(hashes.data, hashes.length * 8, region.data, pageCount * P)) {
    ThrowRange(env, "hashes must not overlap the region's pages");
  }
  try {
    job.indices.assign(indices.data, indices.data + indices.length);
  } catch (const std::bad_alloc&) {
    throw Napi::Error::New(env, "out of memory: a copy of " + std::to_string(indices.length) + " indices");
  }
  for (uint64_t k = 0; k < job.indices.size(); ++k) {
    const uint64_t p = job.indices[k];
    if (p >= pageCount) {
      ThrowRange(env, "indices[" + std::to_string(k) + "] = " + std::to_string(p) + " is not below the region's " +
                          std::to_string(pageCount) + " pages");
    }
    if (k > 0 && p <= job.indices[k - 1]) {
      ThrowRange(env, "indices must ascend: indices[" + std::to_string(k) + "] = " + std::to_string(p) +
                          " follows " + std::to_string(job.indices[k - 1]));
    }
  }
  if (!job.indices.empty()) {
    // (last + 1) * P <= byteLength and fileOffset <= 2^53 - 1: the sum cannot overflow.
    const uint64_t end = job.fileOffset + (uint64_t{job.indices.back()} + 1) * P;
    if (end > kMaxSafeInteger) {
      ThrowRange(env, "the pages would end at byte " + std::to_string(end) + " of the file, beyond 2^53 - 1");
    }
  }
  job.region = region.data;
  job.regionFd = region.fd;
  job.hashes = hashes.data;
  Hold(&keep, Arg(info, 5));
  return QueueWorker(new WritePagesWorker(env, std::move(job), std::move(keep)));
}

}  // namespace

void InitPageFileWriter(Napi::Env env, Napi::Object exports) {
  exports.Set("writePagesToFile", Napi::Function::New<WritePagesToFile>(env, "writePagesToFile"));
}

}  // namespace pagewire
