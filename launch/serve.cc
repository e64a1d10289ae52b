#include "launch/serve.h"

#include <dlfcn.h>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>
#include <utility>  // before asio: Boost 1.74 needs std::exchange declared

#include "common/logging.h"
#include "common/util.h"
#include "launch/offline.h"
#include "worker/checkpoint.h"

namespace m6rec {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;
using nlohmann::json;

constexpr size_t kMaxBody = 1 << 20;

// A request that cannot be answered: its status and why.
struct Refusal {
  http::status status;
  std::string why;
};

// "a=1&b=x" -> {a: 1, b: x} (no percent-decoding beyond '+'; ids and names need none).
std::map<std::string, std::string> QueryParams(std::string_view q) {
  std::map<std::string, std::string> out;
  while (!q.empty()) {
    const size_t amp = q.find('&');
    std::string_view kv = q.substr(0, amp);
    const size_t eq = kv.find('=');
    std::string v(eq == std::string_view::npos ? "" : kv.substr(eq + 1));
    for (char& c : v)
      if (c == '+') c = ' ';
    out[std::string(kv.substr(0, eq))] = v;
    if (amp == std::string_view::npos) break;
    q.remove_prefix(amp + 1);
  }
  return out;
}

// A run opened at one checkpoint and warmed for serving.
struct ServedModel {
  std::unique_ptr<OpenedRun> run;
  std::unique_ptr<Recommender> rec;  // reads run's tables: destroyed first (declared last)
};

class Service {
 public:
  Service(const ServeOptions& o, std::unique_ptr<OpenedRun> run, std::unique_ptr<Recommender> rec)
      : o_(o), run_(std::move(run)), rec_(std::move(rec)) {}

  const std::string& checkpoint() const { return run_->checkpoint; }
  // Between two requests (the io thread): serve from another checkpoint.
  void Swap(std::unique_ptr<OpenedRun> run, std::unique_ptr<Recommender> rec) {
    rec_ = std::move(rec);  // before the run whose tables it reads
    run_ = std::move(run);
    ++reloads_;
  }
  // Requests naming `domain` are answered by `model` (a multi-domain run's domain at its own
  // best epoch); several domains may share one.
  void ServeDomainFrom(const std::string& domain, std::shared_ptr<ServedModel> model) {
    own_[domain] = std::move(model);
  }

  http::response<http::string_body> Handle(const http::request<http::string_body>& req) {
    ++requests_;
    json body;
    http::status status = http::status::ok;
    try {
      body = Route(req);
    } catch (const Refusal& r) {
      status = r.status;
      body = {{"error", r.why}};
    } catch (const std::exception& e) {
      status = http::status::internal_server_error;
      body = {{"error", std::string("internal error: ") + e.what()}};
    }
    if (status != http::status::ok) ++errors_;
    http::response<http::string_body> res{status, req.version()};
    res.set(http::field::server, "m6rec");
    res.set(http::field::content_type, "application/json");
    res.keep_alive(req.keep_alive());
    res.body() = body.dump() + "\n";
    res.prepare_payload();
    return res;
  }

 private:
  json Route(const http::request<http::string_body>& req) {
    const std::string_view target(req.target().data(), req.target().size());
    const size_t q = target.find('?');
    const std::string_view path = target.substr(0, q);
    const auto params =
        QueryParams(q == std::string_view::npos ? std::string_view() : target.substr(q + 1));
    if (path == "/health") {
      if (req.method() != http::verb::get)
        throw Refusal{http::status::method_not_allowed, "/health: GET"};
      const Dataset& ds = *run_->sc.data;
      json h = {{"status", "ok"},        {"run_dir", o_.run_dir}, {"checkpoint", run_->checkpoint},
                {"users", ds.num_users}, {"items", ds.num_items}, {"requests", requests_},
                {"errors", errors_},     {"reloads", reloads_}};
      for (const auto& [domain, m] : own_) h["domain_checkpoints"][domain] = m->run->checkpoint;
      return h;
    }
    if (path == "/recommend") {
      if (req.method() == http::verb::get) return FromParams(params);
      if (req.method() == http::verb::post) {
        json j = json::parse(req.body(), nullptr, /*allow_exceptions=*/false);
        if (j.is_discarded() || !j.is_object())
          throw Refusal{http::status::bad_request, "the body is not a JSON object"};
        return FromJson(j);
      }
      throw Refusal{http::status::method_not_allowed, "/recommend: GET or POST"};
    }
    throw Refusal{http::status::not_found,
                  "no route " + std::string(path) + " (GET /health, GET|POST /recommend)"};
  }

  int K(const json& v) const {
    if (!v.is_number_integer() || v.get<int64_t>() < 1 || v.get<int64_t>() > o_.max_k)
      throw Refusal{http::status::bad_request,
                    "k " + v.dump() + ": an integer in 1.." + std::to_string(o_.max_k)};
    return int(v.get<int64_t>());
  }

  static json Answer(StatusOr<json> r) {
    if (r.ok()) return *std::move(r);
    const bool caller = r.status().code() == StatusCode::kInvalidArgument ||
                        r.status().code() == StatusCode::kNotFound;
    throw Refusal{caller ? http::status::bad_request : http::status::internal_server_error,
                  r.status().message()};
  }

  json FromParams(const std::map<std::string, std::string>& p) {
    json j = json::object();
    for (const auto& [key, v] : p) {
      if (key == "user" || key == "k") {
        char* end = nullptr;
        const long long n = std::strtoll(v.c_str(), &end, 10);
        if (v.empty() || *end != '\0')
          throw Refusal{http::status::bad_request, key + "=" + v + ": not an integer"};
        j[key] = n;
      } else if (key == "explain") {
        j[key] = v == "1" || v == "true";
      } else if (key == "domain") {
        j[key] = v;
      } else {
        throw Refusal{http::status::bad_request,
                      "unknown parameter '" + key + "' (user, k, domain, explain)"};
      }
    }
    if (!j.contains("user"))
      throw Refusal{http::status::bad_request,
                    "GET /recommend needs user=ID (a user the run never saw: POST its history, "
                    "profile, friends)"};
    return FromJson(j);
  }

  json FromJson(const json& j) {
    int k = 0;  // the strategy's, else 10
    bool explain = false;
    std::string domain;
    json user_fields = json::object();
    json user;
    for (const auto& [key, v] : j.items()) {
      if (key == "k") {
        k = K(v);
      } else if (key == "explain") {
        if (!v.is_boolean()) throw Refusal{http::status::bad_request, "explain: true or false"};
        explain = v.get<bool>();
      } else if (key == "domain") {
        if (!v.is_string()) throw Refusal{http::status::bad_request, "domain: a name"};
        domain = v.get<std::string>();
      } else if (key == "user") {
        if (!v.is_number_integer()) throw Refusal{http::status::bad_request, "user: an integer id"};
        user = v;
      } else if (key == "history" || key == "profile" || key == "friends") {
        user_fields[key] = v;
      } else {
        throw Refusal{
            http::status::bad_request,
            "unknown field '" + key + "' (user | history, profile, friends; k, domain, explain)"};
      }
    }
    if (!user.is_null() && !user_fields.empty())
      throw Refusal{http::status::bad_request,
                    "a known user (user) or a new one (history, profile, friends), not both"};
    if (user.is_null() && user_fields.empty())
      throw Refusal{http::status::bad_request,
                    "who: user=ID, or a new user's history, profile or friends"};
    Recommender& rec = For(domain);
    if (!user.is_null()) return Answer(rec.ForUser(user.get<int64_t>(), k, domain, explain));
    auto n = ParseNewUser(user_fields);
    if (!n.ok()) throw Refusal{http::status::bad_request, n.status().message()};
    return Answer(rec.ForNewUser(*n, k, domain, explain));
  }

  Recommender& For(const std::string& domain) {
    auto it = own_.find(domain);
    return it == own_.end() ? *rec_ : *it->second->rec;
  }

  const ServeOptions& o_;
  std::unique_ptr<OpenedRun> run_;
  std::unique_ptr<Recommender> rec_;
  std::map<std::string, std::shared_ptr<ServedModel>> own_;
  uint64_t requests_ = 0, errors_ = 0, reloads_ = 0;
};

// A run at `checkpoint`, opened and warmed (its item vectors computed) for serving.
// `data`: the run's dataset, where another checkpoint of it is open already.
Status LoadForServing(const ServeOptions& o, const std::string& checkpoint,
                      std::unique_ptr<OpenedRun>* run, std::unique_ptr<Recommender>* rec,
                      std::shared_ptr<const Dataset> data = nullptr) {
  M6_ASSIGN_OR_RETURN(
      *run, OpenRun(o.run_dir, checkpoint, o.overrides, o.use_strategy, "", std::move(data)));
  M6_ASSIGN_OR_RETURN(*rec, Recommender::Open((*run)->sc));
  const Dataset& ds = *(*run)->sc.data;
  for (uint32_t u = 0; u < ds.num_users; ++u)
    if (!ds.train[u].empty()) return (*rec)->ForUser(u, 1, "", false).status();
  return Status::OK();
}

// --follow: polls the run for a newer checkpoint; loads it on its own thread (one at a time)
// and hands it to the io thread, which swaps it in between requests.
class Follower {
 public:
  Follower(const ServeOptions& o, asio::io_context& io, Service* svc)
      : o_(o), io_(io), svc_(svc), timer_(io) {}
  ~Follower() {
    if (loader_.joinable()) loader_.join();
  }
  void Start() { Arm(); }
  void Stop() {
    stopped_ = true;
    timer_.cancel();
  }

 private:
  void Arm() {
    timer_.expires_after(std::chrono::milliseconds(int64_t(o_.follow_s * 1000)));
    timer_.async_wait([this](beast::error_code ec) {
      if (ec || stopped_) return;
      Poll();
      Arm();
    });
  }
  void Poll() {
    if (loading_) return;
    auto latest = LatestCheckpoint(o_.run_dir);
    if (!latest.ok() || *latest == svc_->checkpoint() || *latest == failed_) return;
    if (loader_.joinable()) loader_.join();
    loading_ = true;
    loader_ = std::thread([this, ckpt = *latest] {
      auto run = std::make_shared<std::unique_ptr<OpenedRun>>();
      auto rec = std::make_shared<std::unique_ptr<Recommender>>();
      Status s = LoadForServing(o_, ckpt, run.get(), rec.get());
      asio::post(io_, [this, s, ckpt, run, rec] {
        loading_ = false;
        if (!s.ok()) {
          failed_ = ckpt;  // not retried: a complete checkpoint does not change
          LOG_WARN << "follow: cannot serve " << ckpt << ": " << s.message();
          return;
        }
        svc_->Swap(std::move(*run), std::move(*rec));
        LOG_INFO << "follow: serving " << ckpt;
      });
    });
  }

  const ServeOptions& o_;
  asio::io_context& io_;
  Service* svc_;
  asio::steady_timer timer_;
  std::thread loader_;
  bool loading_ = false, stopped_ = false;  // io thread only
  std::string failed_;
};

// One connection: read a request, answer, repeat while keep-alive.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket s, Service* svc) : stream_(std::move(s)), svc_(svc) {}
  void Start() { Read(); }

 private:
  void Read() {
    parser_.emplace();
    parser_->body_limit(kMaxBody);
    stream_.expires_after(std::chrono::seconds(60));
    http::async_read(
        stream_, buf_, *parser_,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->OnRead(ec); });
  }
  void OnRead(beast::error_code ec) {
    if (ec == http::error::end_of_stream || ec == beast::error::timeout) return Close();
    if (ec) {
      // A malformed or oversized request: say so, then close.
      if (ec == http::error::body_limit)
        return Refuse(http::status::payload_too_large, "body over 1 MiB");
      if (ec.category() == beast::error_code(http::error::bad_method).category())
        return Refuse(http::status::bad_request, "malformed HTTP request: " + ec.message());
      return Close();
    }
    res_ = svc_->Handle(parser_->get());
    Write(res_.keep_alive());
  }
  void Refuse(http::status st, const std::string& why) {
    res_ = {st, 11};
    res_.set(http::field::content_type, "application/json");
    res_.body() = json{{"error", why}}.dump() + "\n";
    res_.keep_alive(false);
    res_.prepare_payload();
    Write(false);
  }
  void Write(bool again) {
    http::async_write(stream_, res_,
                      [self = shared_from_this(), again](beast::error_code ec, size_t) {
                        if (ec || !again) return self->Close();
                        self->Read();
                      });
  }
  void Close() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buf_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::response<http::string_body> res_;
  Service* svc_;
};

void Accept(tcp::acceptor& acc, Service* svc) {
  acc.async_accept([&acc, svc](beast::error_code ec, tcp::socket s) {
    if (!ec) std::make_shared<Session>(std::move(s), svc)->Start();
    if (acc.is_open()) Accept(acc, svc);
  });
}

}  // namespace

int RunServe(const ServeOptions& o) {
  // One request at a time on one thread: BLAS helper threads would only spin against it (and
  // against a training job on the same cores). OpenBLAS read its environment at load time, so
  // it is told directly where it is the BLAS.
  using SetThreads = void (*)(int);
  if (auto set = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads")))
    set(1);
  std::unique_ptr<OpenedRun> run;
  std::unique_ptr<Recommender> rec;
  Status loaded = LoadForServing(o, o.checkpoint, &run, &rec);
  if (!loaded.ok()) {
    std::fprintf(stderr, "m6rec serve: %s\n", loaded.message().c_str());
    return 1;
  }
  // A multi-domain run served from its best checkpoint: every domain the job chose another
  // epoch for is answered from that epoch's checkpoint (best.json's "domains"), as
  // `recommend --domain` is. --checkpoint and --follow serve one checkpoint to every domain.
  std::vector<std::pair<std::string, std::string>> own;  // domain, its checkpoint
  if (o.checkpoint.empty() && o.follow_s <= 0)
    for (const auto& d : run->sc.data->domains) {
      auto c = BestCheckpoint(o.run_dir, d.name);
      if (!c.ok() && c.status().code() != StatusCode::kNotFound) {
        std::fprintf(stderr, "m6rec serve: domain %s: %s\n", d.name.c_str(),
                     c.status().message().c_str());
        return 1;
      }
      if (c.ok() && *c != run->checkpoint) own.emplace_back(d.name, *c);
    }
  // The domains' models share the run's dataset (read once).
  const std::shared_ptr<const Dataset> data = run->base_data;
  Service svc(o, std::move(run), std::move(rec));
  std::map<std::string, std::shared_ptr<ServedModel>> opened;  // by checkpoint
  for (const auto& [domain, ckpt] : own) {
    auto& m = opened[ckpt];
    if (!m) {
      m = std::make_shared<ServedModel>();
      Status s = LoadForServing(o, ckpt, &m->run, &m->rec, data);
      if (!s.ok()) {
        std::fprintf(stderr, "m6rec serve: domain %s: %s\n", domain.c_str(), s.message().c_str());
        return 1;
      }
    }
    LOG_INFO << "domain " << domain << " is served from its own best epoch's " << ckpt;
    svc.ServeDomainFrom(domain, m);
  }
  asio::io_context io(1);
  Follower follower(o, io, &svc);
  tcp::acceptor acc(io);
  beast::error_code ec;
  const auto addr = asio::ip::make_address(o.host, ec);
  if (ec) {
    std::fprintf(stderr, "m6rec serve: --host '%s': %s\n", o.host.c_str(), ec.message().c_str());
    return 2;
  }
  tcp::endpoint ep(addr, static_cast<unsigned short>(o.port));
  acc.open(ep.protocol(), ec);
  if (!ec) acc.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acc.bind(ep, ec);
  if (!ec) acc.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    std::fprintf(stderr, "m6rec serve: cannot listen on %s:%d: %s\n", o.host.c_str(), o.port,
                 ec.message().c_str());
    return 1;
  }
  const int port = acc.local_endpoint().port();
  asio::signal_set stop(io, SIGINT, SIGTERM);
  stop.async_wait([&](beast::error_code, int sig) {
    LOG_INFO << "signal " << sig << ": stopping";
    acc.close();
    follower.Stop();
    io.stop();
  });
  Accept(acc, &svc);
  if (o.follow_s > 0) follower.Start();
  if (!o.port_file.empty()) {
    Status s = WriteFileAtomic(o.port_file, std::to_string(port) + "\n");
    if (!s.ok()) {
      std::fprintf(stderr, "m6rec serve: %s\n", s.message().c_str());
      return 1;
    }
  }
  LOG_INFO << "serving " << o.run_dir << " on http://" << o.host << ":" << port
           << " (GET /health, GET|POST /recommend)";
  io.run();
  return 0;
}

}  // namespace m6rec
