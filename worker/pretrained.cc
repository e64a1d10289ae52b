#include "worker/pretrained.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <numeric>
#include <unordered_map>

#include "worker/dataset.h"

namespace m6rec {
namespace {

std::string At(const std::string& path, uint64_t line) {
  return path + ":" + std::to_string(line) + ": ";
}

// Splits at spaces and tabs (a trailing '\r' is dropped).
std::vector<std::string> Fields(const std::string& line) {
  std::vector<std::string> f;
  size_t i = 0;
  const size_t n = line.size() - (!line.empty() && line.back() == '\r');
  while (i < n) {
    while (i < n && (line[i] == ' ' || line[i] == '\t')) ++i;
    size_t j = i;
    while (j < n && line[j] != ' ' && line[j] != '\t') ++j;
    if (j > i) f.push_back(line.substr(i, j - i));
    i = j;
  }
  return f;
}

bool ParseU64(const std::string& s, uint64_t* out) {
  if (s.empty() || !std::all_of(s.begin(), s.end(), ::isdigit)) return false;
  errno = 0;
  *out = std::strtoull(s.c_str(), nullptr, 10);
  return errno == 0;
}

Status ParseValues(const std::vector<std::string>& f, size_t first, const std::string& where,
                   std::vector<float>* out) {
  for (size_t k = first; k < f.size(); ++k) {
    char* end = nullptr;
    errno = 0;
    const float v = std::strtof(f[k].c_str(), &end);
    if (end != f[k].c_str() + f[k].size() || errno == ERANGE)
      return Status::InvalidArgument(where + "value " + std::to_string(k - first + 1) + " '" +
                                     f[k] + "' is not a number");
    if (!std::isfinite(v))
      return Status::InvalidArgument(where + "value " + std::to_string(k - first + 1) +
                                     " is not finite");
    out->push_back(v);
  }
  return Status::OK();
}

StatusOr<VectorFile> ReadNpyVectors(const std::string& path) {
  M6_ASSIGN_OR_RETURN(NpyMatrix m, ReadNpy(path));
  VectorFile v;
  v.dim = uint32_t(m.cols);
  v.vectors = m.rows;
  for (uint64_t r = 0; r < m.rows; ++r) {
    v.ids.push_back(r);
    v.lines.push_back(r + 1);
  }
  for (size_t i = 0; i < m.data.size(); ++i)
    if (!std::isfinite(m.data[i]))
      return Status::InvalidArgument(path + ": row " + std::to_string(i / m.cols) +
                                     " has a non-finite value");
  v.values = std::move(m.data);
  return v;
}

}  // namespace

std::string LowerCase(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool ParseVectorFormat(const std::string& s, VectorFormat* out) {
  if (s == "words")
    *out = VectorFormat::kWords;
  else if (s == "ids")
    *out = VectorFormat::kIds;
  else if (s == "npy")
    *out = VectorFormat::kNpy;
  else
    return false;
  return true;
}

StatusOr<VectorFile> ReadVectorFile(const std::string& path, VectorFormat format,
                                    const std::function<bool(const std::string&)>& keep_word) {
  if (format == VectorFormat::kNpy) return ReadNpyVectors(path);
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::NotFound("cannot open '" + path + "'");
  VectorFile v;
  uint64_t header_count = 0;
  bool header = false;
  std::string line;
  std::vector<float> row;
  for (uint64_t n = 1; std::getline(in, line); ++n) {
    std::vector<std::string> f = Fields(line);
    if (f.empty()) continue;
    uint64_t a, b;
    if (n == 1 && f.size() == 2 && ParseU64(f[0], &a) && ParseU64(f[1], &b)) {
      // word2vec / fastText header: "count dim".
      if (b == 0 || b > 65536)
        return Status::InvalidArgument(At(path, n) + "header dimension " + f[1] + " (1..65536)");
      header = true;
      header_count = a;
      v.dim = uint32_t(b);
      continue;
    }
    if (f.size() < 2)
      return Status::InvalidArgument(At(path, n) + "expected '" +
                                     (format == VectorFormat::kWords ? "word" : "id") +
                                     " v1 v2 ...'");
    if (v.dim == 0) v.dim = uint32_t(f.size() - 1);
    if (f.size() - 1 != v.dim)
      return Status::InvalidArgument(At(path, n) + std::to_string(f.size() - 1) +
                                     " values, the file's vectors have " + std::to_string(v.dim));
    ++v.vectors;
    uint64_t id = 0;
    if (format == VectorFormat::kIds && !ParseU64(f[0], &id))
      return Status::InvalidArgument(At(path, n) + "id '" + f[0] +
                                     "' is not a non-negative integer");
    row.clear();
    M6_RETURN_IF_ERROR(ParseValues(f, 1, At(path, n), &row));
    if (format == VectorFormat::kWords) {
      if (keep_word && !keep_word(f[0])) continue;
      v.words.push_back(f[0]);
    } else {
      v.ids.push_back(id);
    }
    v.lines.push_back(n);
    v.values.insert(v.values.end(), row.begin(), row.end());
  }
  if (v.vectors == 0) return Status::InvalidArgument(path + ": no vectors");
  if (header && header_count != v.vectors)
    return Status::InvalidArgument(path + ":1: the header says " + std::to_string(header_count) +
                                   " vectors, the file has " + std::to_string(v.vectors));
  return v;
}

StatusOr<Vocabulary> ReadVocabulary(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::NotFound("cannot open vocabulary '" + path + "'");
  Vocabulary vocab;
  int form = 0;  // 1: "word", 2: "word id"
  std::string line;
  for (uint64_t n = 1; std::getline(in, line); ++n) {
    std::vector<std::string> f = Fields(line);
    const int this_form = int(f.size());
    if (this_form < 1 || this_form > 2)
      return Status::InvalidArgument(At(path, n) + "expected 'word' or 'word id'");
    if (form && this_form != form)
      return Status::InvalidArgument(At(path, n) + "'" + line + "': the file's lines are '" +
                                     (form == 1 ? "word" : "word id") + "'");
    form = this_form;
    uint64_t id = n - 1;
    if (form == 2 && !ParseU64(f[1], &id))
      return Status::InvalidArgument(At(path, n) + "id '" + f[1] +
                                     "' is not a non-negative integer");
    vocab.push_back({f[0], id});
  }
  if (vocab.empty()) return Status::InvalidArgument(path + ": an empty vocabulary");
  return vocab;
}

StatusOr<Rows> MapVectors(const std::string& path, const VectorFile& file, const Vocabulary* vocab,
                          uint32_t dim, uint64_t table_rows, bool missing_is_error,
                          ImportReport* report) {
  *report = ImportReport{};
  report->vectors = file.vectors;
  if (file.dim != dim)
    return Status::InvalidArgument(path + ": vectors of dimension " + std::to_string(file.dim) +
                                   ", the table's dim is " + std::to_string(dim));
  // (row id, index into file.values), then sorted by id.
  std::vector<std::pair<uint64_t, size_t>> picks;
  if (vocab == nullptr) {
    std::unordered_map<uint64_t, uint64_t> line_of;
    for (size_t i = 0; i < file.ids.size(); ++i) {
      const uint64_t id = file.ids[i];
      if (table_rows && id >= table_rows)
        return Status::InvalidArgument(At(path, file.lines[i]) + "id " + std::to_string(id) +
                                       " is outside the table (" + std::to_string(table_rows) +
                                       " rows)");
      auto [it, fresh] = line_of.emplace(id, file.lines[i]);
      if (!fresh)
        return Status::InvalidArgument(At(path, file.lines[i]) + "id " + std::to_string(id) +
                                       " again (first at line " + std::to_string(it->second) + ")");
      picks.push_back({id, i});
    }
  } else {
    std::unordered_map<std::string, size_t> exact, folded;
    for (size_t i = 0; i < file.words.size(); ++i) {
      exact.emplace(file.words[i], i);  // the first vector of a word wins
      folded.emplace(LowerCase(file.words[i]), i);
    }
    std::unordered_map<uint64_t, std::string> word_of;
    for (const auto& [word, id] : *vocab) {
      if (word.empty()) continue;  // an unnamed row
      if (table_rows && id >= table_rows)
        return Status::InvalidArgument("vocabulary: '" + word + "' names row " +
                                       std::to_string(id) + ", the table has " +
                                       std::to_string(table_rows) + " rows");
      auto [w, fresh] = word_of.emplace(id, word);
      if (!fresh)
        return Status::InvalidArgument("vocabulary: row " + std::to_string(id) + " is both '" +
                                       w->second + "' and '" + word + "'");
      ++report->vocabulary;
      size_t at = 0;
      bool by_case = false;
      if (auto e = exact.find(word); e != exact.end()) {
        at = e->second;
      } else if (auto c = folded.find(LowerCase(word)); c != folded.end()) {
        at = c->second;
        by_case = true;
      } else {
        if (report->missing.size() < 20) report->missing.push_back(word);
        ++report->missing_count;
        continue;
      }
      report->matched_case += by_case;
      picks.push_back({id, at});
    }
    if (missing_is_error && report->missing_count)
      return Status::InvalidArgument(
          path + ": " + std::to_string(report->missing_count) + " of " +
          std::to_string(report->vocabulary) + " vocabulary words have no vector (first: '" +
          report->missing.front() + "'); --missing keep keeps their initial rows");
  }
  std::sort(picks.begin(), picks.end());
  Rows rows;
  rows.dim = dim;
  for (const auto& [id, i] : picks) {
    rows.ids.push_back(id);
    rows.values.insert(rows.values.end(), file.values.begin() + long(i * dim),
                       file.values.begin() + long((i + 1) * dim));
  }
  report->matched = rows.ids.size();
  return rows;
}

}  // namespace m6rec
