// Fixed-size I/O buffers for one worker, bounded in number. A connection holds a buffer
// only while bytes are in flight, so idle connections cost no buffer memory; when the pool
// is exhausted a connection stops reading until one comes back (backpressure, not growth).
#pragma once

#include <cstddef>
#include <memory>
#include <vector>

namespace nodemesh::agent {

class Buffer {
 public:
  explicit Buffer(size_t capacity) : data_(new char[capacity]), capacity_(capacity) {}
  // Bytes received, not yet sent on.
  char* pending() { return data_.get() + begin_; }
  size_t pending_size() const { return end_ - begin_; }
  // Room for more bytes.
  char* space() { return data_.get() + end_; }
  size_t space_size() const { return capacity_ - end_; }
  void Filled(size_t n) { end_ += n; }
  void Drained(size_t n) {
    begin_ += n;
    if (begin_ == end_) begin_ = end_ = 0;
  }
  bool empty() const { return begin_ == end_; }
  // Forgets what it holds.
  void Clear() { begin_ = end_ = 0; }

 private:
  std::unique_ptr<char[]> data_;
  size_t capacity_;
  size_t begin_ = 0;
  size_t end_ = 0;
};

class BufferPool {
 public:
  BufferPool(size_t buffer_size, size_t max_buffers)
      : buffer_size_(buffer_size), max_buffers_(max_buffers) {}

  // A buffer, or nullptr when max_buffers are in use.
  std::unique_ptr<Buffer> Acquire() {
    if (!free_.empty()) {
      std::unique_ptr<Buffer> buffer = std::move(free_.back());
      free_.pop_back();
      return buffer;
    }
    if (allocated_ == max_buffers_) return nullptr;
    ++allocated_;
    return std::make_unique<Buffer>(buffer_size_);
  }

  // A buffer comes back empty whatever its holder left in it: a connection that ended with
  // bytes unsent must not hand them to the next connection that takes the buffer.
  void Release(std::unique_ptr<Buffer> buffer) {
    if (!buffer) return;
    buffer->Clear();
    free_.push_back(std::move(buffer));
  }

  size_t in_use() const { return allocated_ - free_.size(); }

 private:
  const size_t buffer_size_;
  const size_t max_buffers_;
  size_t allocated_ = 0;
  std::vector<std::unique_ptr<Buffer>> free_;
};

}  // namespace nodemesh::agent
