// Positioned reads and writes of a file for work on a pool thread (no napi calls): each returns 0, or the errno
// of the system call that failed.
#pragma once
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace pagewire {

// pwrite of all length bytes at offset, again after a short write or EINTR. A write that takes no
// bytes is reported as EIO rather than tried forever.
inline int PwriteAll(int fd, const uint8_t* data, uint64_t length, uint64_t offset) {
  for (uint64_t done = 0; done < length;) {
    const ssize_t n = pwrite(fd, data + done, static_cast<size_t>(length - done), static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return n < 0 ? errno : EIO;
    done += static_cast<uint64_t>(n);
  }
  return 0;
}

// pread of all length bytes at offset, again after a short read or EINTR; reading past the end of the
// file is EIO.
inline int PreadAll(int fd, uint8_t* data, uint64_t length, uint64_t offset) {
  for (uint64_t done = 0; done < length;) {
    const ssize_t n = pread(fd, data + done, static_cast<size_t>(length - done), static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return n < 0 ? errno : EIO;
    done += static_cast<uint64_t>(n);
  }
  return 0;
}

// Makes [offset, +length) of the file read as zeros: a hole, which costs neither memory (tmpfs) nor
// disk blocks; where the file system has no holes, written zeros. *call names the call that failed.
// Throws std::bad_alloc when it cannot allocate the zeros to write.
inline int PunchZeros(int fd, uint64_t offset, uint64_t length, const char** call) {
  *call = "fallocate";
  if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                static_cast<off_t>(length)) == 0) {
    return 0;
  }
  if (errno != EOPNOTSUPP && errno != ENOSYS && errno != EINVAL) return errno;
  *call = "pwrite";
  constexpr uint64_t kChunk = uint64_t{1} << 20;
  const std::vector<uint8_t> zeros(static_cast<size_t>(std::min(length, kChunk)));
  for (uint64_t at = 0; at < length; at += kChunk) {
    const int err = PwriteAll(fd, zeros.data(), std::min(kChunk, length - at), offset + at);
    if (err != 0) return err;
  }
  return 0;
}

}  // namespace pagewire
