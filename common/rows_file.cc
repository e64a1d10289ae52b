#include "common/rows_file.h"

#include <cmath>
#include <cstring>
#include <fstream>

#include "common/util.h"

namespace m6rec {
namespace {

constexpr char kMagic[8] = {'M', '6', 'R', 'O', 'W', 'S', '0', '1'};

struct Header {
  char magic[8];
  uint32_t dim;
  uint32_t reserved;
  uint64_t count;
};
static_assert(sizeof(Header) == 24);

}  // namespace

Status WriteRowsFile(const std::string& path, const Rows& rows) {
  if (rows.dim == 0) return Status::InvalidArgument(path + ": rows need a dimension");
  if (rows.values.size() != rows.ids.size() * rows.dim)
    return Status::InvalidArgument(path + ": values do not match ids x dim");
  for (size_t i = 1; i < rows.ids.size(); ++i)
    if (rows.ids[i] <= rows.ids[i - 1])
      return Status::InvalidArgument(path + ": row ids must be strictly increasing");
  for (float v : rows.values)
    if (!std::isfinite(v)) return Status::InvalidArgument(path + ": a value is not finite");
  Header h{};
  std::memcpy(h.magic, kMagic, sizeof(kMagic));
  h.dim = rows.dim;
  h.count = rows.ids.size();
  std::string bytes(sizeof(h), '\0');
  std::memcpy(bytes.data(), &h, sizeof(h));
  bytes.append(reinterpret_cast<const char*>(rows.ids.data()), rows.ids.size() * sizeof(uint64_t));
  bytes.append(reinterpret_cast<const char*>(rows.values.data()),
               rows.values.size() * sizeof(float));
  return WriteFileAtomic(path, bytes);
}

StatusOr<Rows> ReadRowsFile(const std::string& path, const std::function<bool(uint64_t id)>& keep) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::NotFound("cannot open rows file '" + path + "'");
  Header h{};
  if (!in.read(reinterpret_cast<char*>(&h), sizeof(h)) ||
      std::memcmp(h.magic, kMagic, sizeof(kMagic)) != 0)
    return Status::InvalidArgument("'" + path + "' is not a rows file (made by m6rec import)");
  in.seekg(0, std::ios::end);
  const uint64_t size = static_cast<uint64_t>(in.tellg());
  if (h.dim == 0 || h.dim > 65536 ||
      size != sizeof(h) + h.count * (sizeof(uint64_t) + uint64_t{h.dim} * sizeof(float)))
    return Status::InvalidArgument("'" + path + "': truncated or corrupt (" + std::to_string(size) +
                                   " bytes for " + std::to_string(h.count) + " rows of dim " +
                                   std::to_string(h.dim) + ")");
  in.seekg(sizeof(h));
  std::vector<uint64_t> ids(h.count);
  in.read(reinterpret_cast<char*>(ids.data()), std::streamsize(ids.size() * sizeof(uint64_t)));
  Rows out;
  out.dim = h.dim;
  std::vector<float> row(h.dim);
  for (uint64_t i = 0; i < h.count; ++i) {
    if (i > 0 && ids[i] <= ids[i - 1])
      return Status::InvalidArgument("'" + path + "': row ids out of order at row " +
                                     std::to_string(i));
    if (!keep || keep(ids[i])) {
      in.seekg(std::streamoff(sizeof(h) + h.count * sizeof(uint64_t) +
                              i * uint64_t{h.dim} * sizeof(float)));
      if (!in.read(reinterpret_cast<char*>(row.data()), std::streamsize(h.dim * sizeof(float))))
        return Status::InvalidArgument("'" + path + "': truncated at row " + std::to_string(i));
      for (float v : row)
        if (!std::isfinite(v))
          return Status::InvalidArgument("'" + path + "': row " + std::to_string(ids[i]) +
                                         " has a non-finite value");
      out.ids.push_back(ids[i]);
      out.values.insert(out.values.end(), row.begin(), row.end());
    }
  }
  if (!in) return Status::InvalidArgument("'" + path + "': read failed");
  return out;
}

}  // namespace m6rec
