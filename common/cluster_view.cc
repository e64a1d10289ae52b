#include "common/cluster_view.h"

#include <nlohmann/json.hpp>

namespace m6rec {

std::vector<uint8_t> ClusterView::OwnedSlots(uint32_t server_rank) const {
  std::vector<uint8_t> owned(slot_map.size(), 0);
  for (size_t s = 0; s < slot_map.size(); ++s) owned[s] = slot_map[s] == server_rank;
  return owned;
}

namespace {
nlohmann::json NodesJson(const std::vector<NodeAddr>& nodes) {
  nlohmann::json a = nlohmann::json::array();
  for (const auto& n : nodes)
    a.push_back({{"rank", n.rank}, {"host", n.host}, {"port", n.port}, {"pid", n.pid}});
  return a;
}

Status ReadNodes(const nlohmann::json& j, const char* key, std::vector<NodeAddr>* out) {
  if (!j.contains(key) || !j[key].is_array())
    return Status::Corruption(std::string("cluster view: '") + key + "' missing");
  for (const auto& n : j[key]) {
    if (!n.is_object() || !n.contains("rank") || !n["rank"].is_number_unsigned() ||
        !n.contains("host") || !n["host"].is_string() || !n.contains("port") ||
        !n["port"].is_number_integer())
      return Status::Corruption(std::string("cluster view: bad entry in '") + key + "'");
    NodeAddr a;
    a.rank = n["rank"];
    a.host = n["host"];
    a.port = n["port"];
    a.pid = n.value("pid", 0);
    if (a.rank != out->size())
      return Status::Corruption(std::string("cluster view: '") + key + "' ranks out of order");
    out->push_back(a);
  }
  return Status::OK();
}
}  // namespace

std::string ClusterView::ToJson() const {
  nlohmann::json j = {{"role", role},
                      {"rank", rank},
                      {"servers", NodesJson(servers)},
                      {"workers", NodesJson(workers)},
                      {"slot_map", slot_map}};
  return j.dump();
}

StatusOr<ClusterView> ClusterView::FromJson(const std::string& text) {
  auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return Status::Corruption("cluster view: not JSON");
  ClusterView v;
  if (!j.contains("role") || !j["role"].is_string() || !j.contains("rank") ||
      !j["rank"].is_number_unsigned() || !j.contains("slot_map") || !j["slot_map"].is_array())
    return Status::Corruption("cluster view: role/rank/slot_map missing");
  v.role = j["role"];
  v.rank = j["rank"];
  M6_RETURN_IF_ERROR(ReadNodes(j, "servers", &v.servers));
  M6_RETURN_IF_ERROR(ReadNodes(j, "workers", &v.workers));
  for (const auto& s : j["slot_map"]) {
    if (!s.is_number_unsigned() || s.get<uint64_t>() >= v.servers.size())
      return Status::Corruption("cluster view: slot_map names a server that does not exist");
    v.slot_map.push_back(s.get<uint32_t>());
  }
  if (v.slot_map.empty()) return Status::Corruption("cluster view: empty slot_map");
  return v;
}

ClusterView ClusterView::SingleServer(const std::string& host, int port, uint32_t num_slots) {
  ClusterView v;
  v.role = "worker";
  v.servers.push_back(NodeAddr{0, host, port, 0});
  v.slot_map.assign(num_slots, 0);
  return v;
}

std::vector<uint32_t> RoundRobinSlotMap(uint32_t num_slots, uint32_t servers) {
  std::vector<uint32_t> m(num_slots);
  for (uint32_t s = 0; s < num_slots; ++s) m[s] = s % servers;
  return m;
}

}  // namespace m6rec
