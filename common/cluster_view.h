// ClusterView: what the scheduler publishes once every node has registered: the addresses of
// the servers and workers, each node's rank, and the slot -> server map that places keys.
// Value type; (de)serialised as JSON on the control plane with every field checked.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/keys.h"
#include "common/status.h"

namespace m6rec {

struct NodeAddr {
  uint32_t rank = 0;
  std::string host;
  int port = 0;
  int pid = 0;
};

struct ClusterView {
  std::string role;   // of the receiving node
  uint32_t rank = 0;  // of the receiving node, within its role
  std::vector<NodeAddr> servers;
  std::vector<NodeAddr> workers;
  std::vector<uint32_t> slot_map;  // slot -> server rank

  uint32_t ServerOf(Key k) const {
    return slot_map[SlotOf(k, static_cast<uint32_t>(slot_map.size()))];
  }
  // owned[slot] = 1 for the slots of server `rank`.
  std::vector<uint8_t> OwnedSlots(uint32_t server_rank) const;

  std::string ToJson() const;
  static StatusOr<ClusterView> FromJson(const std::string& text);

  // A one-server view owning every slot (standalone servers and tests).
  static ClusterView SingleServer(const std::string& host, int port, uint32_t num_slots);
};

// Round-robin placement of slots on servers: slot s -> s % servers.
std::vector<uint32_t> RoundRobinSlotMap(uint32_t num_slots, uint32_t servers);

}  // namespace m6rec
