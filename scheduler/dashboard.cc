#include "scheduler/dashboard.h"

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <sstream>

#include "common/web_assets.h"

namespace m6rec {

using nlohmann::json;

namespace {

constexpr const char* kDashboardJs = R"js(
var charts = {};
function pts(list, f) { return list.map(function (p) { return [p.t, f(p)]; }).filter(function (p) { return typeof p[1] === 'number' && isFinite(p[1]); }); }
function draw(st) {
  var nodes = st.nodes || [];
  var rows = [['role', 'rank', 'host:port', 'pid', 'state', 'heartbeat age s', 'epoch', 'steps', 'samples/s', 'loss', 'ETA job']];
  nodes.forEach(function (n) {
    var s = n.stats || {};
    var state = !n.alive ? 'DEAD' : (n.finished ? 'finished' : 'alive');
    rows.push([n.role, n.rank, n.host + ':' + n.port, n.pid, state, n.silent_ms / 1000,
               s.epoch !== undefined ? s.epoch + '/' + s.epochs : '-', s.steps !== undefined ? s.steps : '-',
               s.samples_per_s !== undefined ? Math.round(s.samples_per_s) : '-',
               s.loss !== undefined ? s.loss : '-',
               s.eta_job_s !== undefined ? Math.round(s.eta_job_s) + ' s' : '-']);
  });
  document.getElementById('nodes').innerHTML = m6table(rows).replace(/<td>DEAD<\/td>/g, '<td class="dead">DEAD</td>');
  document.getElementById('phase').textContent = st.phase + ' · up ' + Math.round(st.uptime_s) + ' s' +
      (st.missing ? ' · missing: ' + st.missing : '');
  var h = st.history || {};
  var loss = [], sps = [];
  Object.keys(h.workers || {}).forEach(function (r) {
    var l = h.workers[r];
    loss.push({ label: 'worker ' + r, points: pts(l, function (p) { return p.loss; }) });
    sps.push({ label: 'worker ' + r, points: pts(l, function (p) { return p.samples_per_s; }) });
  });
  var ps = m6psSeries(h);
  m6line('loss', { title: 'training loss (epoch mean so far) per worker', x: 'seconds', y: 'loss', series: loss });
  m6line('sps', { title: 'samples/s per worker', x: 'seconds', y: 'samples/s', series: sps });
  m6line('ps', { title: 'parameter-server requests/s per server', x: 'seconds', y: 'requests/s', series: ps.rate });
  m6line('hit', { title: 'hot-tier hit rate per server', x: 'seconds', y: 'hit rate', series: ps.hit });
  m6line('wait', { title: 'time a worker blocks on the PS, per step', x: 'seconds', y: 'ms per step', series: ps.wait });
  m6line('service', { title: 'server time per request (lookup or optimizer)', x: 'seconds', y: 'microseconds', series: ps.service });
  var ev = h.evals || [];
  var names = ev.length ? Object.keys(ev[ev.length - 1].test).filter(function (k) {
    return ['HR@10', 'NDCG@10', 'Recall@20', 'NDCG@20'].indexOf(k) >= 0; }) : [];
  m6line('eval', { title: 'test metrics per evaluated epoch', x: 'epoch', y: 'metric',
    series: names.map(function (m) { return { label: m, points: ev.map(function (e) { return [e.epoch, e.test[m]]; }) }; }) });
  document.body.dataset.polls = String(Number(document.body.dataset.polls || 0) + 1);
}
function poll() {
  fetch('/status', { cache: 'no-store' }).then(function (r) { return r.json(); }).then(function (st) {
    draw(st);
    document.getElementById('conn').textContent = 'live';
    document.getElementById('conn').className = 'ok';
  }).catch(function (e) {
    document.getElementById('conn').textContent = 'no answer from the scheduler (' + e + ')';
    document.getElementById('conn').className = 'dead';
  }).finally(function () { setTimeout(poll, 1000); });
}
poll();
)js";

void Add(prometheus::Family<prometheus::Gauge>& f, const prometheus::Labels& l, double v) {
  f.Add(l).Set(v);
}
void Count(prometheus::Family<prometheus::Counter>& f, const prometheus::Labels& l, double v) {
  if (v > 0)
    f.Add(l).Increment(v);
  else
    f.Add(l);
}

double Num(const json& j, const char* k) {
  return j.contains(k) && j[k].is_number() ? j[k].get<double>() : 0.0;
}

}  // namespace

void StatsHistory::Append(json point) {
  const double t = point.value("t", 0.0);
  if (!points_.empty() && t - points_.back().value("t", 0.0) < min_gap_s_) return;
  if (points_.size() >= capacity_) {
    std::deque<json> kept;
    for (size_t i = 0; i < points_.size(); i += 2) kept.push_back(std::move(points_[i]));
    points_ = std::move(kept);
    const double span = points_.back().value("t", 0.0) - points_.front().value("t", 0.0);
    min_gap_s_ = span / double(points_.size() - 1);
    if (t - points_.back().value("t", 0.0) < min_gap_s_) return;
  }
  points_.push_back(std::move(point));
}

std::string DashboardPage(const std::string& job_name) {
  const std::string body =
      "<h1>m6rec &middot; " + HtmlEscape(job_name) +
      "</h1>\n<p><span id=\"conn\" class=\"muted\">connecting</span> &middot; <span "
      "id=\"phase\"></span></p>\n<h2>Cluster</h2><div id=\"nodes\"></div>\n<h2>Training</h2><div "
      "class=\"grid\">"
      "<div class=\"card\"><canvas id=\"loss\"></canvas></div>"
      "<div class=\"card\"><canvas id=\"sps\"></canvas></div>"
      "<div class=\"card\"><canvas id=\"eval\"></canvas></div>"
      "</div>\n<h2>Parameter servers</h2><div class=\"grid\">"
      "<div class=\"card\"><canvas id=\"ps\"></canvas></div>"
      "<div class=\"card\"><canvas id=\"hit\"></canvas></div>"
      "<div class=\"card\"><canvas id=\"wait\"></canvas></div>"
      "<div class=\"card\"><canvas id=\"service\"></canvas></div></div>\n"
      "<p class=\"muted\">Also: <a href=\"/status\">/status</a> (JSON), <a "
      "href=\"/metrics\">/metrics</a> (Prometheus).</p>";
  return HtmlPage("m6rec dashboard: " + job_name, body, kDashboardJs);
}

std::string PrometheusText(const json& st) {
  using prometheus::BuildCounter;
  using prometheus::BuildGauge;
  prometheus::Registry reg;
  auto gauge = [&reg](const char* name,
                      const char* help) -> prometheus::Family<prometheus::Gauge>& {
    return BuildGauge().Name(name).Help(help).Register(reg);
  };
  auto counter = [&reg](const char* name,
                        const char* help) -> prometheus::Family<prometheus::Counter>& {
    return BuildCounter().Name(name).Help(help).Register(reg);
  };
  auto& info = gauge("m6rec_job_info", "The job and its phase (always 1)");
  auto& uptime = gauge("m6rec_job_uptime_seconds", "Seconds since the scheduler started");
  auto& up = gauge("m6rec_node_up", "1 while the node is alive");
  auto& age =
      gauge("m6rec_node_heartbeat_age_seconds", "Seconds since the node was last heard from");
  auto& steps = counter("m6rec_worker_steps_total", "Training steps done");
  auto& samples = counter("m6rec_worker_samples_total", "Training samples done");
  auto& loss = gauge("m6rec_worker_loss", "Mean training loss of the current epoch so far");
  auto& sps = gauge("m6rec_worker_samples_per_second",
                    "Training samples per second over the last log window");
  auto& epoch = gauge("m6rec_worker_epoch", "The epoch being trained");
  auto& eta = gauge("m6rec_worker_eta_seconds", "Estimated seconds of training left in the job");
  auto& eval = gauge("m6rec_eval_metric", "The last evaluation's test metrics (all workers)");
  auto& reqs = counter("m6rec_server_requests_total", "Parameter-server requests by kind");
  auto& rows =
      counter("m6rec_server_rows_total", "Rows pulled or pushed through the parameter server");
  auto& hot = counter("m6rec_server_hot_hits_total", "Row reads served by the in-memory hot tier");
  auto& cold = counter("m6rec_server_cold_reads_total",
                       "Row reads that went to the store below the hot tier");
  auto& wait = counter("m6rec_worker_ps_wait_seconds_total",
                       "Seconds the training loop blocked on parameter-server pulls or pushes");
  auto& busy = counter("m6rec_server_busy_seconds_total",
                       "Seconds a parameter server spent serving pulls or pushes");
  auto& stream = counter("m6rec_stream_events_total", "Stream events a worker has taken");
  Add(info, {{"job", st.value("job", std::string())}, {"phase", st.value("phase", std::string())}},
      1);
  Add(uptime, {}, Num(st, "uptime_s"));
  json last_eval;
  for (const json& n : st.value("nodes", json::array())) {
    const std::string role = n.value("role", std::string()),
                      rank = std::to_string(n.value("rank", 0));
    Add(up, {{"role", role}, {"rank", rank}}, n.value("alive", false) ? 1 : 0);
    Add(age, {{"role", role}, {"rank", rank}}, Num(n, "silent_ms") / 1000.0);
    if (!n.contains("stats") || !n["stats"].is_object()) continue;
    const json& s = n["stats"];
    if (role == "worker") {
      const prometheus::Labels l{{"rank", rank}};
      Count(steps, l, Num(s, "steps"));
      Count(samples, l, Num(s, "samples"));
      Add(loss, l, Num(s, "loss"));
      Add(sps, l, Num(s, "samples_per_s"));
      Add(epoch, l, Num(s, "epoch"));
      if (s.contains("eta_job_s")) Add(eta, l, Num(s, "eta_job_s"));
      Count(wait, {{"rank", rank}, {"op", "pull"}}, Num(s, "pull_wait_s"));
      Count(wait, {{"rank", rank}, {"op", "push"}}, Num(s, "push_wait_s"));
      if (s.contains("stream")) Count(stream, l, Num(s["stream"], "events"));
      if (s.contains("last_eval") && rank == "0") last_eval = s["last_eval"];
    } else if (role == "server") {
      Count(reqs, {{"rank", rank}, {"op", "pull"}}, Num(s, "pulls"));
      Count(reqs, {{"rank", rank}, {"op", "push"}}, Num(s, "pushes"));
      Count(rows, {{"rank", rank}, {"op", "pull"}}, Num(s, "rows_pulled"));
      Count(rows, {{"rank", rank}, {"op", "push"}}, Num(s, "rows_pushed"));
      Count(hot, {{"rank", rank}}, Num(s, "hot_hits"));
      Count(cold, {{"rank", rank}}, Num(s, "cold_reads"));
      Count(busy, {{"rank", rank}, {"op", "pull"}}, Num(s, "pull_us") / 1e6);
      Count(busy, {{"rank", rank}, {"op", "push"}}, Num(s, "push_us") / 1e6);
    }
  }
  if (last_eval.is_object() && last_eval.contains("test"))
    for (const auto& [k, v] : last_eval["test"].items())
      if (v.is_number() && k != "users") Add(eval, {{"metric", k}}, v.get<double>());
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, reg.Collect());
  return out.str();
}

}  // namespace m6rec
