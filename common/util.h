// Small process and file helpers shared by every role. Thread-safe.
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"

namespace m6rec {

// Absolute path of the running executable (to spawn the other roles).
std::string SelfExePath();

// 64 random bits from the kernel (job tokens, run ids).
uint64_t RandomU64();

// Writes `content` to `path` through a temporary file and rename, so readers never see half.
Status WriteFileAtomic(const std::string& path, const std::string& content);
StatusOr<std::string> ReadFileToString(const std::string& path);

// mkdir -p.
Status MakeDirs(const std::string& path);
// Removes a file or a directory tree (like `rm -rf`; a missing path is fine). Own code rather
// than std::filesystem::remove_all: PyTorch's wheels export an incompatible copy of that
// function from libtorch.so, and calls bound to it crash (seen on the GPU check machine).
Status RemoveTree(const std::string& path);

// Parses a job token given as 16 hex digits.
bool ParseToken(const std::string& s, uint64_t* out);
std::string FormatToken(uint64_t token);

}  // namespace m6rec
