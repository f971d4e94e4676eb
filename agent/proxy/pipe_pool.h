// Kernel pipes for one worker, through which a relay moves bytes socket to socket with
// splice(2) without copying them into userspace. A pipe costs two descriptors, so a relay
// holds one only while bytes are in it and the pool is bounded: when it is at its bound, or
// the process is out of descriptors, there is no pipe and the relay copies instead (slower,
// never a byte lost). Pipes that come back empty are kept for reuse, a few of them; one that
// comes back holding bytes (its relay ended before sending them) is closed, so no bytes
// reach the next connection. One thread (the worker's) uses a pool.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <cstddef>
#include <memory>
#include <vector>

#include "common/base/unique_fd.h"

namespace nodemesh::agent {

class Pipe {
 public:
  Pipe(UniqueFd read_end, UniqueFd write_end, size_t capacity)
      : read_end_(std::move(read_end)), write_end_(std::move(write_end)), capacity_(capacity) {}
  int read_fd() const { return read_end_.get(); }
  int write_fd() const { return write_end_.get(); }
  // How many bytes one splice into the pipe asks for: its size.
  size_t capacity() const { return capacity_; }
  // Bytes spliced in, not yet spliced out.
  size_t held() const { return held_; }
  void Filled(size_t n) { held_ += n; }
  void Drained(size_t n) { held_ -= n; }

 private:
  UniqueFd read_end_;
  UniqueFd write_end_;
  size_t capacity_;
  size_t held_ = 0;
};

class PipePool {
 public:
  // What a pipe is asked to hold. A pipe has one slot per page (or part of one) spliced in,
  // 16 at the kernel's default size: 1 MiB (256 slots) moves a burst of a bulk stream in one
  // splice each way, which halved the agent's CPU per byte against 64 KiB (bench/RESULTS.md).
  // Like a buffer, what is in it is only what the writer's socket has not taken yet. A
  // process without CAP_SYS_RESOURCE whose user holds more pipe pages than
  // /proc/sys/fs/pipe-user-pages-soft (64 MiB by default) is refused the size: its pipe keeps
  // the smaller one the kernel gave it, slower but still correct.
  static constexpr size_t kDefaultPipeSize = 1 << 20;

  // At most `max_pipes` in use and kept (0: never a pipe, every relay copies), each asked to
  // hold `pipe_size` bytes (F_SETPIPE_SZ; the kernel's default size when it refuses).
  explicit PipePool(size_t max_pipes, size_t pipe_size = kDefaultPipeSize)
      : max_pipes_(max_pipes), pipe_size_(pipe_size) {}

  // A pipe, empty, or nullptr when max_pipes are in use or no pipe can be made.
  std::unique_ptr<Pipe> Acquire() {
    if (!free_.empty()) {
      std::unique_ptr<Pipe> pipe = std::move(free_.back());
      free_.pop_back();
      ++in_use_;
      return pipe;
    }
    if (in_use_ == max_pipes_) return nullptr;
    int ends[2];
    if (pipe2(ends, O_CLOEXEC | O_NONBLOCK) != 0) return nullptr;  // EMFILE, ENFILE
    UniqueFd read_end(ends[0]), write_end(ends[1]);
    const int size = fcntl(write_end.get(), F_SETPIPE_SZ, static_cast<int>(pipe_size_));
    const int capacity = size > 0 ? size : fcntl(write_end.get(), F_GETPIPE_SZ);
    if (capacity <= 0) return nullptr;
    ++in_use_;
    return std::make_unique<Pipe>(std::move(read_end), std::move(write_end),
                                  static_cast<size_t>(capacity));
  }

  // Kept for reuse if it is empty and few are kept; closed otherwise.
  void Release(std::unique_ptr<Pipe> pipe) {
    if (!pipe) return;
    --in_use_;
    if (pipe->held() == 0 && free_.size() < kMaxKept) free_.push_back(std::move(pipe));
  }

  size_t in_use() const { return in_use_; }
  size_t kept() const { return free_.size(); }

 private:
  // Pipes kept empty beyond those in use: enough for a worker's bulk flows to take one at
  // each burst without making it anew, few enough to hold few descriptors while idle.
  static constexpr size_t kMaxKept = 16;

  const size_t max_pipes_;
  const size_t pipe_size_;
  size_t in_use_ = 0;
  std::vector<std::unique_ptr<Pipe>> free_;
};

}  // namespace nodemesh::agent
