#include "launch/import.h"

#include <cstdio>
#include <nlohmann/json.hpp>
#include <unordered_set>

#include "common/config.h"
#include "common/rows_file.h"
#include "worker/dataset.h"
#include "worker/pretrained.h"

namespace m6rec {
namespace {

using nlohmann::json;

// The table's rows as the job's data defines them: how many (0: unknown) and their names.
struct TableRows {
  uint64_t count = 0;
  Vocabulary names;  // the token table's named tokens
};

StatusOr<TableRows> RowsOfTable(const JobConfig& cfg, const TableSpec& t) {
  TableRows r;
  // The synthetic data is generated per run; its tables' sizes are known, not named.
  if (cfg.data.source == DataSource::kSynth && cfg.data.domains.empty()) return r;
  M6_ASSIGN_OR_RETURN(Dataset ds, LoadDataset(cfg.data, ""));
  if (t.name == cfg.model.token_table) {
    r.count = ds.num_tokens;
    for (uint64_t id = 0; id < ds.token_names.size(); ++id)
      if (!ds.token_names[id].empty()) r.names.push_back({ds.token_names[id], id});
  } else if (t.name == cfg.train.user_table) {
    r.count = ds.num_users;
  } else if (t.name == cfg.train.item_table) {
    r.count = ds.num_items;
  }
  return r;
}

Status Import(const ImportOptions& o, json* answer) {
  M6_ASSIGN_OR_RETURN(JobConfig cfg, LoadConfig(o.config, o.overrides));
  const TableSpec* spec = nullptr;
  std::string names;
  for (const TableSpec& t : cfg.tables) {
    if (t.name == o.table) spec = &t;
    names += (names.empty() ? "" : ", ") + t.name;
  }
  if (!spec)
    return Status::InvalidArgument("--table: " + o.config + " has no table '" + o.table +
                                   "' (its tables: " + names + ")");
  VectorFormat format = VectorFormat::kWords;
  const std::string fmt = !o.format.empty() ? o.format
                          : o.from.size() > 4 && o.from.substr(o.from.size() - 4) == ".npy"
                              ? "npy"
                              : "words";
  if (!ParseVectorFormat(fmt, &format))
    return Status::InvalidArgument("--format '" + fmt + "' (words, ids, npy)");
  if (format != VectorFormat::kWords && !o.vocab.empty())
    return Status::InvalidArgument("--vocab: the " + fmt +
                                   " format names rows by id; a vocabulary maps words");
  M6_ASSIGN_OR_RETURN(TableRows rows, RowsOfTable(cfg, *spec));
  Vocabulary vocab;
  std::string vocab_source;
  if (format == VectorFormat::kWords) {
    if (!o.vocab.empty()) {
      M6_ASSIGN_OR_RETURN(vocab, ReadVocabulary(o.vocab));
      vocab_source = o.vocab;
    } else if (!rows.names.empty()) {
      vocab = rows.names;
      vocab_source = "the dataset's token names";
    } else {
      return Status::InvalidArgument(
          "--vocab: the rows of table '" + o.table +
          "' have no names in this job's data (MovieLens names its tokens; with "
          "data.title_words also the titles' words): give a vocabulary file");
    }
  }
  std::unordered_set<std::string> wanted;
  for (const auto& [w, id] : vocab) {
    wanted.insert(w);
    wanted.insert(LowerCase(w));
  }
  auto keep = [&](const std::string& w) { return wanted.count(w) || wanted.count(LowerCase(w)); };
  M6_ASSIGN_OR_RETURN(VectorFile file, ReadVectorFile(o.from, format, keep));
  ImportReport report;
  M6_ASSIGN_OR_RETURN(Rows out,
                      MapVectors(o.from, file, format == VectorFormat::kWords ? &vocab : nullptr,
                                 spec->dim, rows.count, o.missing_is_error, &report));
  if (out.ids.empty())
    return Status::InvalidArgument(o.from + ": no vector matches a row of table '" + o.table +
                                   "' (" + std::to_string(report.vocabulary) + " words from " +
                                   vocab_source + ")");
  M6_RETURN_IF_ERROR(WriteRowsFile(o.out, out));
  *answer = {{"table", o.table},
             {"dim", spec->dim},
             {"from", o.from},
             {"format", fmt},
             {"out", o.out},
             {"vectors_in_file", report.vectors},
             {"rows_written", report.matched},
             {"table_rows", rows.count}};
  if (format == VectorFormat::kWords) {
    (*answer)["vocabulary"] = vocab_source;
    (*answer)["vocabulary_words"] = report.vocabulary;
    (*answer)["matched_case_insensitively"] = report.matched_case;
    (*answer)["coverage"] = report.vocabulary ? double(report.matched) / report.vocabulary : 0.0;
    (*answer)["missing"] = report.missing_count;
    (*answer)["missing_first"] = report.missing;
  }
  std::fprintf(stderr,
               "imported %llu rows of dim %u into %s%s\n"
               "use them: in %s, table '%s':  init: {from: %s}   (rows not in the file keep "
               "the table's distribution; add  trainable: false  to keep the vectors as they "
               "are)\n",
               (unsigned long long)report.matched, spec->dim, o.out.c_str(),
               format == VectorFormat::kWords
                   ? (" (" + std::to_string(report.matched) + " of " +
                      std::to_string(report.vocabulary) + " vocabulary words have a vector)")
                         .c_str()
                   : "",
               o.config.c_str(), o.table.c_str(), o.out.c_str());
  return Status::OK();
}

}  // namespace

int RunImport(const ImportOptions& o) {
  json answer;
  Status s = Import(o, &answer);
  if (!s.ok()) {
    std::fprintf(stderr, "m6rec import: %s\n", s.message().c_str());
    return 2;
  }
  std::printf("%s\n", answer.dump().c_str());
  return 0;
}

}  // namespace m6rec
