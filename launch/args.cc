#include "launch/args.h"

#include <cstdlib>

namespace m6rec {

StatusOr<Args> Args::Parse(int argc, char** argv, int start, const std::set<std::string>& flags,
                           const std::set<std::string>& options) {
  Args a;
  for (int i = start; i < argc; ++i) {
    std::string s = argv[i];
    if (s.rfind("--", 0) != 0 || s == "--") {
      a.positional_.push_back(s);
      continue;
    }
    std::string name = s.substr(2), value;
    bool has_value = false;
    size_t eq = name.find('=');
    if (eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    if (flags.count(name)) {
      if (has_value) return Status::InvalidArgument("option --" + name + " takes no value");
      a.values_[name].push_back("1");
    } else if (options.count(name)) {
      if (!has_value) {
        if (i + 1 >= argc) return Status::InvalidArgument("option --" + name + " needs a value");
        value = argv[++i];
      }
      a.values_[name].push_back(value);
    } else {
      return Status::InvalidArgument("unknown option --" + name);
    }
  }
  return a;
}

std::string Args::Get(const std::string& name, const std::string& def) const {
  auto it = values_.find(name);
  return it == values_.end() ? def : it->second.back();
}

std::vector<std::string> Args::GetAll(const std::string& name) const {
  auto it = values_.find(name);
  return it == values_.end() ? std::vector<std::string>{} : it->second;
}

StatusOr<int> Args::GetInt(const std::string& name, int def) const {
  if (!Has(name)) return def;
  std::string v = Get(name);
  char* end = nullptr;
  long x = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0') return Status::InvalidArgument("--" + name + " expects an integer, got '" + v + "'");
  return static_cast<int>(x);
}

}  // namespace m6rec
