// A small command-line parser for the m6rec subcommands: "--name value", "--name=value",
// boolean "--flag", repeatable options (--set a=b --set c=d) and positionals. Unknown options
// are errors that name the option.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "common/status.h"

namespace m6rec {

class Args {
 public:
  // `flags` take no value; `options` take one; anything else starting with "--" is an error.
  static StatusOr<Args> Parse(int argc, char** argv, int start, const std::set<std::string>& flags,
                              const std::set<std::string>& options);

  bool Has(const std::string& name) const { return values_.count(name) > 0; }
  std::string Get(const std::string& name, const std::string& def = "") const;
  std::vector<std::string> GetAll(const std::string& name) const;
  StatusOr<int> GetInt(const std::string& name, int def) const;
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  std::map<std::string, std::vector<std::string>> values_;
  std::vector<std::string> positional_;
};

}  // namespace m6rec
