#include "launch/report.h"

#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "common/config.h"
#include "common/keys.h"
#include "common/util.h"
#include "common/web_assets.h"
#include "launch/offline.h"
#include "worker/pca.h"
#include "worker/sparse_tables.h"

namespace m6rec {

using nlohmann::json;

namespace {

// The page's script: builds every chart from DATA = {runs: [{name, result, metrics, config}]}.
constexpr const char* kReportJs = R"js(
var runs = DATA.runs;
var grid = document.getElementById('charts');
var nextId = 0, usedNames = {};
function card(title, note) {
  var d = document.createElement('div');
  d.className = 'card';
  var id = 'c' + (nextId++);
  // The chart's file name (its PNG link, m6rec report --charts): the title, made unique.
  var file = title.replace(/[^A-Za-z0-9@]+/g, '-').replace(/^-|-$/g, '') || 'chart';
  for (var k = 2; usedNames[file]; ++k) file = file.replace(/-[0-9]+$/, '') + '-' + k;
  usedNames[file] = 1;
  d.innerHTML = '<canvas id="' + id + '" data-file="' + file + '"></canvas>' + (note ? '<div class="muted">' + m6esc(note) + '</div>' : '') +
                '<a class="muted" href="#" download="' + file + '.png">PNG</a>';
  var a = d.querySelector('a');
  a.addEventListener('click', function () { a.href = m6png(document.getElementById(id)); });
  grid.appendChild(d);
  return id;
}
function num(v) { return typeof v === 'number' && isFinite(v); }
function series(run, pick, xkey) {
  var pts = [];
  run.metrics.forEach(function (l) {
    var y = pick(l);
    var x = l[xkey || 'epoch'];
    if (num(x) && num(y)) pts.push([x, y]);
  });
  return pts;
}
var epochLines = function (r) { return r.metrics.filter(function (l) { return l.epoch !== undefined && l.test; }); };
runs.forEach(function (r) { r.metrics = r.metrics || []; r.epochs = epochLines(r); });
var multi = runs.length > 1;
function label(r, what) { return multi ? r.name + (what ? ' ' + what : '') : (what || r.name); }

// Loss over epochs and over wall time.
var lossS = [], lossT = [];
runs.forEach(function (r) {
  var e = { metrics: r.epochs };
  lossS.push({ label: label(r, 'loss'), points: series(e, function (l) { return l.loss; }) });
  lossT.push({ label: label(r, 'loss'), points: series(e, function (l) { return l.loss; }, 'elapsed_s') });
});
if (lossS.some(function (s) { return s.points.length; })) {
  m6line(card('training loss per epoch'), { title: 'training loss', x: 'epoch', y: 'loss', series: lossS });
  m6line(card('training loss over wall time'), { title: 'training loss over wall time', x: 'seconds', y: 'loss', series: lossT });
}
// Every headline metric the runs evaluated, test and validation, over epochs and wall time.
var metricNames = [];
runs.forEach(function (r) {
  r.epochs.forEach(function (l) {
    Object.keys(l.test).forEach(function (k) {
      if (num(l.test[k]) && k !== 'users' && metricNames.indexOf(k) < 0) metricNames.push(k);
    });
  });
});
var headline = ['HR@10', 'NDCG@10', 'Recall@20', 'NDCG@20', 'MRR', 'AUC'].filter(function (m) { return metricNames.indexOf(m) >= 0; });
headline.forEach(function (m) {
  var s = [], t = [];
  runs.forEach(function (r) {
    var e = { metrics: r.epochs };
    s.push({ label: label(r, 'test'), points: series(e, function (l) { return l.test[m]; }) });
    if (r.epochs.some(function (l) { return l.valid; }))
      s.push({ label: label(r, 'valid'), points: series(e, function (l) { return l.valid ? l.valid[m] : null; }) });
    t.push({ label: label(r, 'test'), points: series(e, function (l) { return l.test[m]; }, 'elapsed_s') });
  });
  m6line(card(m + ' per epoch'), { title: m + ' per epoch', x: 'epoch', y: m, series: s });
  m6line(card(m + ' over wall time'), { title: m + ' over wall time (test)', x: 'seconds', y: m, series: t });
});
// Per domain and per task (the first run's).
var r0 = runs[0];
['domains', 'cold_start'].forEach(function (key) {
  var names = {};
  r0.epochs.forEach(function (l) { if (l.test[key]) Object.keys(l.test[key]).forEach(function (n) { names[n] = 1; }); });
  var metric = headline[0] || 'HR@10';
  var s = Object.keys(names).map(function (n) {
    return { label: n, points: series({ metrics: r0.epochs }, function (l) { return l.test[key] && l.test[key][n] ? l.test[key][n][metric] : null; }) };
  });
  if (s.length) m6line(card(metric + ' per ' + key), { title: 'test ' + metric + ' per ' + (key === 'domains' ? 'domain' : 'cold/warm group'), x: 'epoch', y: metric, series: s });
});
var tasks = {};
r0.epochs.forEach(function (l) { if (l.test.tasks) Object.keys(l.test.tasks).forEach(function (n) { tasks[n] = l.test.tasks[n]; }); });
Object.keys(tasks).forEach(function (n) {
  var m = ['RMSE', 'AUC', 'macro_F1', 'accuracy'].filter(function (k) { return num(tasks[n][k]); })[0];
  if (!m) return;
  m6line(card('task ' + n), { title: 'task ' + n + ': test ' + m + ' per epoch', x: 'epoch', y: m,
    series: [{ label: n, points: series({ metrics: r0.epochs }, function (l) { return l.test.tasks && l.test.tasks[n] ? l.test.tasks[n][m] : null; }) }] });
});
// The fusion gates: the weight each source carries, per epoch.
['user', 'item'].forEach(function (side) {
  var srcs = {};
  r0.epochs.forEach(function (l) { if (l.gates && l.gates[side]) Object.keys(l.gates[side]).forEach(function (k) { srcs[k] = 1; }); });
  var s = Object.keys(srcs).map(function (k) {
    return { label: k, points: series({ metrics: r0.epochs }, function (l) { return l.gates && l.gates[side] ? l.gates[side][k] : null; }) };
  });
  if (s.length) m6line(card(side + ' gates'), { title: 'fusion weights of the ' + side + ' sources (mean gate)', x: 'epoch', y: 'gate', series: s });
});
// The same per task and per domain (gates.tasks / gates.domains: each condition's own gates).
['tasks', 'domains'].forEach(function (kind) {
  var conds = {};
  r0.epochs.forEach(function (l) { if (l.gates && l.gates[kind]) Object.keys(l.gates[kind]).forEach(function (c) { conds[c] = 1; }); });
  Object.keys(conds).forEach(function (c) {
    var s = [];
    ['user', 'item'].forEach(function (side) {
      var srcs = {};
      r0.epochs.forEach(function (l) {
        var g = l.gates && l.gates[kind] && l.gates[kind][c] && l.gates[kind][c][side];
        if (g) Object.keys(g).forEach(function (k) { srcs[k] = 1; });
      });
      Object.keys(srcs).forEach(function (k) {
        s.push({ label: side + ' ' + k, points: series({ metrics: r0.epochs }, function (l) {
          var g = l.gates && l.gates[kind] && l.gates[kind][c] && l.gates[kind][c][side];
          return g ? g[k] : null; }) });
      });
    });
    if (s.length) m6line(card('gates ' + c), { title: 'fusion weights per source for ' + (kind === 'tasks' ? 'task ' : 'domain ') + c, x: 'epoch', y: 'gate', series: s });
  });
});
// A stream job's prequential curve.
runs.forEach(function (r) {
  var st = r.result.stream;
  if (!st || !st.chunks) return;
  var s = [{ label: label(r, 'HR@10'), points: st.chunks.map(function (c) { return [c.chunk, c['HR@10']]; }) },
           { label: label(r, 'NDCG@10'), points: st.chunks.map(function (c) { return [c.chunk, c['NDCG@10']]; }) }];
  if (st.chunks.length && st.chunks[0]['HR@10_online'] !== undefined)
    s.push({ label: label(r, 'HR@10, online strategy'), points: st.chunks.map(function (c) { return [c.chunk, c['HR@10_online']]; }) });
  m6line(card('prequential'), { title: 'prequential metrics per chunk of the stream (scored before trained)', x: 'chunk', y: 'metric', series: s });
});
// The item map and the score distributions, when the job measured them (report-data.json).
runs.forEach(function (r) {
  var d = r.data;
  if (!d) return;
  ['item', 'user'].forEach(function (side) {
    var m = d[side + '_map'];
    if (!m || !m.groups) return;
    m6scatter(card(side + ' map', m.note), { title: side + 's by the first two principal components of their vectors' + (multi ? ' (' + r.name + ')' : ''),
      x: 'PC1', y: 'PC2', series: m.groups.map(function (g) { return { label: g.label, points: g.points }; }) });
  });
});
// The test scores of positives and sampled negatives at the best epoch (else the last).
runs.forEach(function (r) {
  var best = r.epochs.filter(function (l) { return l.epoch === r.result.best_epoch && l.score_hist; })[0] ||
             r.epochs.filter(function (l) { return l.score_hist; }).slice(-1)[0];
  if (!best || !best.score_hist.bins.length) return;
  var h = best.score_hist;
  m6bars(card('scores'), { title: 'test scores at epoch ' + best.epoch + ': positives vs sampled negatives' + (multi ? ' (' + r.name + ')' : ''),
    labels: h.bins.map(function (b) { return b.toFixed(2); }), x: 'score (bin lower edge)', y: 'share',
    series: [{ label: 'positives', values: h.positives }, { label: 'negatives', values: h.negatives }] });
});
// The cluster over time (timeline.json, written by the scheduler): throughput per worker,
// the parameter servers' request rates and hot-tier hit rate, and what happened when.
runs.forEach(function (r) {
  var tl = r.timeline;
  if (!tl) return;
  var h = tl.history || {}, sfx = multi ? ' (' + r.name + ')' : '';
  var sps = Object.keys(h.workers || {}).map(function (k) {
    return { label: 'worker ' + k, points: h.workers[k].filter(function (p) { return num(p.samples_per_s); })
                                                      .map(function (p) { return [p.t, p.samples_per_s]; }) };
  });
  if (sps.length) m6line(card('throughput'), { title: 'samples/s per worker over time' + sfx, x: 'seconds', y: 'samples/s', series: sps });
  var ps = m6psSeries(h);
  if (ps.rate.length) {
    m6line(card('ps rate'), { title: 'parameter-server requests/s per server' + sfx, x: 'seconds', y: 'requests/s', series: ps.rate });
    m6line(card('ps hits'), { title: 'hot-tier hit rate per server (reads since the last point)' + sfx, x: 'seconds', y: 'hit rate', series: ps.hit });
    m6line(card('ps service'), { title: 'server time per request (lookup or optimizer)' + sfx, x: 'seconds', y: 'microseconds', series: ps.service });
  }
  if (ps.wait.length) m6line(card('ps wait'), { title: 'time a worker blocks on the PS per step: pull (not hidden by the prefetch) and push' + sfx, x: 'seconds', y: 'ms per step', series: ps.wait });
  var lanes = [], byLane = {};
  (tl.events || []).forEach(function (e) {
    var lane = e.role ? e.role + ' ' + e.rank : 'scheduler';
    if (!(lane in byLane)) { byLane[lane] = lanes.length; lanes.push(lane); }
  });
  var ser = lanes.map(function (lane) {
    return { label: lane, points: tl.events.filter(function (e) { return (e.role ? e.role + ' ' + e.rank : 'scheduler') === lane; })
                                           .map(function (e) { return [e.t, byLane[lane]]; }) };
  });
  if (ser.length) m6scatter(card('timeline', lanes.map(function (l, i) { return i + ': ' + l; }).join(', ')),
                            { title: 'the cluster\'s events over time (one row per process)' + sfx, x: 'seconds', y: 'process', series: ser });
  var rows = [['seconds', 'process', 'event']];
  (tl.events || []).forEach(function (e) { rows.push([Math.round(e.t * 10) / 10, e.role ? e.role + ' ' + e.rank : 'scheduler', e.event]); });
  var div = document.createElement('div');
  div.innerHTML = '<h3>Timeline' + m6esc(sfx) + '</h3>' + m6table(rows);
  document.getElementById('timeline').appendChild(div);
});
// Tables: the result of every run, then each run's configuration.
var rows = [['run', 'dataset', 'best epoch', 'selected by'].concat(headline).concat(['popularity ' + (headline[0] || ''), 'samples/s', 'wall s'])];
runs.forEach(function (r) {
  var t = r.result.test || {}, p = r.result.popularity || {};
  rows.push([r.name, r.result.dataset || '', r.result.best_epoch || '-', r.result.selected_by || '-']
    .concat(headline.map(function (m) { return num(t[m]) ? t[m] : '-'; }))
    .concat([num(p[headline[0]]) ? p[headline[0]] : '-', num(r.result.samples_per_s) ? Math.round(r.result.samples_per_s) : '-',
             num(r.result.wall_s) ? Math.round(r.result.wall_s * 10) / 10 : '-']));
});
// The published rows the configurations name (report.papers), once each.
var seenPapers = {};
runs.forEach(function (r) {
  (r.papers || []).forEach(function (p) {
    if (seenPapers[p.name]) return;
    seenPapers[p.name] = 1;
    rows.push(['paper: ' + p.name, '', '', ''].concat(headline.map(function (m) { return num(p.metrics[m]) ? p.metrics[m] : '-'; }))
      .concat(['', '', '']));
  });
});
document.getElementById('results').innerHTML = m6table(rows);
var cfg = '';
runs.forEach(function (r) { cfg += '<h3>' + m6esc(r.name) + '</h3><pre>' + m6esc(r.config) + '</pre>'; });
document.getElementById('config').innerHTML = cfg;
document.body.dataset.ready = '1';
// Export mode (report.html#m6export, what `m6rec report --charts DIR` opens in a headless
// browser): once the charts have laid out, every chart's PNG goes into the DOM as
// "file<TAB>data-url" lines for the command to write out.
if (location.hash === '#m6export') setTimeout(function () {
  var lines = [];
  document.querySelectorAll('canvas[data-file]').forEach(function (c) {
    if (Number(c.dataset.points || 0) > 0) lines.push(c.dataset.file + '\t' + m6png(c));
  });
  var pre = document.createElement('pre');
  pre.id = 'm6export';
  pre.textContent = lines.join('\n');
  document.body.appendChild(pre);
  document.body.dataset.exported = String(lines.length);
}, 500);
)js";

StatusOr<json> ReadJsonFile(const std::string& path) {
  M6_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded()) return Status::Corruption(path + ": not JSON");
  return j;
}

StatusOr<json> RunData(const std::string& dir) {
  if (!std::filesystem::exists(dir + "/config.yaml"))
    return Status::NotFound("'" + dir + "' is not a run directory (no config.yaml)");
  json r = {{"name", std::filesystem::path(dir).filename().string()}, {"dir", dir}};
  M6_ASSIGN_OR_RETURN(std::string cfg, ReadFileToString(dir + "/config.yaml"));
  r["config"] = cfg;
  // The published rows the configuration names (report.papers).
  M6_ASSIGN_OR_RETURN(JobConfig parsed, LoadConfig(dir + "/config.yaml"));
  r["papers"] = json::array();
  for (const auto& p : parsed.report.papers)
    r["papers"].push_back({{"name", p.name}, {"metrics", p.metrics}});
  r["result"] = json::object();
  if (std::filesystem::exists(dir + "/result.json")) {
    M6_ASSIGN_OR_RETURN(r["result"], ReadJsonFile(dir + "/result.json"));
    r["result"].erase("config");   // shown as the YAML itself
    r["result"].erase("workers");  // every rank's own summary: not what the page shows
  }
  r["metrics"] = json::array();
  std::ifstream in(dir + "/metrics.jsonl");
  std::string line;
  for (uint64_t n = 1; std::getline(in, line); ++n) {
    if (line.empty()) continue;
    json l = json::parse(line, nullptr, false);
    if (l.is_discarded())
      return Status::Corruption(dir + "/metrics.jsonl:" + std::to_string(n) + ": not JSON");
    r["metrics"].push_back(std::move(l));
  }
  if (std::filesystem::exists(dir + "/timeline.json")) {
    M6_ASSIGN_OR_RETURN(json t, ReadJsonFile(dir + "/timeline.json"));
    r["timeline"] = {{"events", t.value("events", json::array())},
                     {"history", t.value("history", json::object())}};
  }
  if (std::filesystem::exists(dir + "/report-data.json")) {
    M6_ASSIGN_OR_RETURN(r["data"], ReadJsonFile(dir + "/report-data.json"));
  }
  return r;
}

// The executable `name` on PATH ("" when none).
std::string OnPath(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::istringstream dirs(path ? path : "/usr/bin:/bin");
  for (std::string d; std::getline(dirs, d, ':');) {
    const std::string f = (d.empty() ? "." : d) + "/" + name;
    if (::access(f.c_str(), X_OK) == 0) return f;
  }
  return "";
}

StatusOr<std::string> FindChromium() {
  if (const char* env = std::getenv("M6REC_CHROMIUM"); env && *env) {
    if (::access(env, X_OK) != 0)
      return Status::NotFound(std::string("M6REC_CHROMIUM=") + env + " is not an executable");
    return std::string(env);
  }
  for (const char* name : {"chromium", "chromium-browser", "google-chrome"})
    if (std::string f = OnPath(name); !f.empty()) return f;
  return Status::NotFound(
      "no Chromium to draw the charts with (apt-get install chromium, or set M6REC_CHROMIUM)");
}

// Runs argv with its stdout into `out_file` (stderr discarded), waiting at most timeout_s.
Status RunToFile(const std::vector<std::string>& args, const std::string& out_file, int timeout_s) {
  const int fd = ::open(out_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Status::IOError(out_file + ": " + std::strerror(errno));
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(fd);
    return Status::IOError(std::string("fork: ") + std::strerror(errno));
  }
  if (pid == 0) {
    ::setpgid(0, 0);  // its own group: a timeout takes its helper processes too
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    const int null = ::open("/dev/null", O_WRONLY);
    ::dup2(fd, 1);
    if (null >= 0) ::dup2(null, 2);
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(args[0].c_str(), argv.data());
    _exit(127);
  }
  ::close(fd);
  int status = 0;
  for (int waited_ms = 0;; waited_ms += 50) {
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (r < 0) return Status::IOError(std::string("waitpid: ") + std::strerror(errno));
    if (waited_ms >= timeout_s * 1000) {
      ::kill(-pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return Status::DeadlineExceeded(args[0] + " did not finish in " + std::to_string(timeout_s) +
                                      " s");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    return Status::Internal(args[0] + " failed (exit status " +
                            std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : -1) + ")");
  return Status::OK();
}

StatusOr<std::string> Base64Decode(const std::string& in) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::string out;
  out.reserve(in.size() * 3 / 4);
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    if (c == '=') break;
    const int v = value(c);
    if (v < 0) return Status::Corruption("not base64");
    acc = (acc << 6) | uint32_t(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(char((acc >> bits) & 0xff));
    }
  }
  return out;
}

}  // namespace

StatusOr<std::vector<std::string>> ExportCharts(const std::string& report_html,
                                                const std::string& out_dir, int width_px) {
  M6_ASSIGN_OR_RETURN(std::string chromium, FindChromium());
  std::error_code ec;
  const std::string page = std::filesystem::absolute(report_html, ec).string();
  if (!std::filesystem::exists(page)) return Status::NotFound(report_html + ": no such page");
  M6_RETURN_IF_ERROR(MakeDirs(out_dir));
  char tmpl[] = "/tmp/m6rec-charts-XXXXXX";
  if (!::mkdtemp(tmpl)) return Status::IOError(std::string("mkdtemp: ") + std::strerror(errno));
  const std::string tmp = tmpl;
  const std::string dom_file = tmp + "/dom.html";
  Status ran = RunToFile(
      {chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
       "--no-first-run", "--hide-scrollbars", "--user-data-dir=" + tmp + "/profile",
       "--force-device-scale-factor=2", "--window-size=" + std::to_string(width_px) + ",2000",
       "--virtual-time-budget=10000", "--dump-dom", "file://" + page + "#m6export"},
      dom_file, 180);
  auto dom = ran.ok() ? ReadFileToString(dom_file) : StatusOr<std::string>(ran);
  (void)RemoveTree(tmp);
  if (!dom.ok()) return dom.status();
  const std::string open_tag = "<pre id=\"m6export\">";
  const size_t a = dom->find(open_tag), b = dom->find("</pre>", a);
  if (a == std::string::npos || b == std::string::npos)
    return Status::Internal(report_html +
                            ": the page did not export its charts (not an m6rec "
                            "report, or its script failed in " +
                            chromium + ")");
  std::istringstream lines(dom->substr(a + open_tag.size(), b - a - open_tag.size()));
  std::vector<std::string> written;
  for (std::string line; std::getline(lines, line);) {
    const size_t tab = line.find('\t'), comma = line.find(',');
    if (tab == std::string::npos || comma == std::string::npos) continue;
    const std::string name = line.substr(0, tab);
    if (name.find('/') != std::string::npos || name.empty() || name[0] == '.')
      return Status::Corruption("bad chart name '" + name + "'");
    M6_ASSIGN_OR_RETURN(std::string png, Base64Decode(line.substr(comma + 1)));
    const std::string file = out_dir + "/" + name + ".png";
    M6_RETURN_IF_ERROR(WriteFileAtomic(file, png));
    written.push_back(file);
  }
  if (written.empty()) return Status::NotFound(report_html + ": no chart with data to export");
  return written;
}

StatusOr<std::string> BuildReport(const std::vector<std::string>& run_dirs) {
  if (run_dirs.empty()) return Status::InvalidArgument("no run directory to report on");
  json data = {{"runs", json::array()}};
  std::string names;
  for (const auto& d : run_dirs) {
    M6_ASSIGN_OR_RETURN(json r, RunData(d));
    names += (names.empty() ? "" : ", ") + r["name"].get<std::string>();
    data["runs"].push_back(std::move(r));
  }
  std::ostringstream body;
  body << "<h1>m6rec: " << HtmlEscape(names) << "</h1>\n";
  if (run_dirs.size() == 1) {
    const json& res = data["runs"][0]["result"];
    body << "<p class=\"muted\">" << HtmlEscape(res.value("dataset", std::string())) << " &middot; "
         << HtmlEscape(res.value("protocol", std::string())) << " &middot; job "
         << HtmlEscape(res.value("job", std::string())) << "</p>\n";
  }
  body << "<h2>Results</h2><div id=\"results\"></div>\n"
       << "<h2>Charts</h2><div class=\"grid\" id=\"charts\"></div>\n"
       << "<h2>Timeline</h2><div id=\"timeline\"></div>\n"
       << "<h2>Configuration</h2><div id=\"config\"></div>\n";
  const std::string script = "var DATA = " + ScriptJson(data) + ";\n" + kReportJs;
  return HtmlPage("m6rec report: " + names, body.str(), script);
}

namespace {

// Quarters of a count (popularity, history length) as group names.
std::function<std::string(size_t)> Quarters(std::vector<uint32_t> counts, const char* what) {
  std::vector<uint32_t> sorted = counts;
  std::sort(sorted.begin(), sorted.end());
  return [counts = std::move(counts), sorted = std::move(sorted), what](size_t k) {
    static const char* kNames[] = {"lowest", "second", "third", "highest"};
    int q = 0;
    while (q < 3 && counts[k] > sorted[sorted.size() * size_t(q + 1) / 4]) ++q;
    return std::string(kNames[q]) + " quarter by " + what;
  };
}

// Up to 2,000 of `ids`' rows of `table` (every k-th when there are more: the same each time) by
// their first two principal components, grouped by group(position in the kept ids).
StatusOr<json> EmbeddingMap(SparseTables& tables, const TableSpec& table, std::vector<uint32_t> ids,
                            const std::function<std::string(uint32_t)>& group,
                            const std::string& what, const std::string& checkpoint) {
  constexpr size_t kMax = 2000;
  if (ids.size() > kMax) {
    std::vector<uint32_t> every;
    for (size_t k = 0; k < kMax; ++k) every.push_back(ids[k * ids.size() / kMax]);
    ids = std::move(every);
  }
  if (ids.size() < 3) return Status::NotFound("fewer than 3 trained " + what);
  const int64_t n = int64_t(ids.size()), dim = table.dim;
  std::vector<Key> keys;
  for (uint32_t id : ids) keys.push_back(MakeKey(table.id, id));
  std::vector<float> x(size_t(n * dim));
  M6_RETURN_IF_ERROR(tables.Pull(table.id, keys.data(), keys.size(), x.data()));
  const Pca pca = FitPca(x, n, dim, 2);
  const std::vector<float> xy = ApplyPca(pca, x, n);
  std::map<std::string, json> groups;
  for (int64_t k = 0; k < n; ++k)
    groups[group(ids[size_t(k)])].push_back({xy[size_t(2 * k)], xy[size_t(2 * k + 1)]});
  json out = {{"note", std::to_string(n) + " " + what + "' " + table.name + " rows from " +
                           checkpoint + "; the two components explain " +
                           std::to_string(int(100 * pca.explained() + 0.5)) + "% of the variance"},
              {"groups", json::array()}};
  for (auto& [label, pts] : groups)
    out["groups"].push_back({{"label", label}, {"points", std::move(pts)}});
  return out;
}

}  // namespace

Status WriteReportData(const std::string& run_dir) {
  M6_ASSIGN_OR_RETURN(auto run, OpenRun(run_dir, "", {}, false));
  const JobConfig& cfg = run->cfg;
  const Dataset& ds = *run->sc.data;
  const TableSpec* it = cfg.FindTable(cfg.train.item_table);
  if (!it) return Status::NotFound("no item table");
  json out = json::object();
  // Items: the trained ones, grouped by domain, or by popularity quarter in a one-domain run.
  std::vector<uint32_t> items, pops;
  for (uint32_t i = ds.first_item; i < ds.num_items; ++i)
    if (i < ds.item_popularity.size() && ds.item_popularity[i] > 0) {
      items.push_back(i);
      pops.push_back(ds.item_popularity[i]);
    }
  auto item_quarter = Quarters(pops, "popularity");
  std::map<uint32_t, size_t> item_pos;
  for (size_t k = 0; k < items.size(); ++k) item_pos[items[k]] = k;
  M6_ASSIGN_OR_RETURN(out["item_map"], EmbeddingMap(
                                           *run->tables, *it, items,
                                           [&](uint32_t i) {
                                             return ds.multi_domain()
                                                        ? ds.domains[ds.ItemDomain(i)].name
                                                        : item_quarter(item_pos[i]);
                                           },
                                           "items", run->checkpoint));
  // Users, when the model has a trained row per user (not the M6 model with model.user_id
  // off, whose user rows stay at their initialisation): by domain, or by history length.
  const TableSpec* ut = cfg.FindTable(cfg.train.user_table);
  if (ut && (cfg.train.job != JobKind::kM6 || cfg.model.user_id)) {
    std::vector<uint32_t> users, lengths;
    for (uint32_t u = 0; u < ds.num_users; ++u)
      if (!ds.train[u].empty() && ds.Trained(u)) {
        users.push_back(u);
        lengths.push_back(uint32_t(ds.train[u].size()));
      }
    auto user_quarter = Quarters(lengths, "history length");
    std::map<uint32_t, size_t> user_pos;
    for (size_t k = 0; k < users.size(); ++k) user_pos[users[k]] = k;
    auto map = EmbeddingMap(
        *run->tables, *ut, users,
        [&](uint32_t u) {
          return ds.multi_domain() ? ds.domains[ds.UserDomain(u)].name : user_quarter(user_pos[u]);
        },
        "users", run->checkpoint);
    if (map.ok()) out["user_map"] = *map;
  }
  return WriteFileAtomic(run_dir + "/report-data.json", out.dump() + "\n");
}

Status WriteRunReport(const std::string& run_dir) {
  M6_ASSIGN_OR_RETURN(std::string page, BuildReport({run_dir}));
  return WriteFileAtomic(run_dir + "/report.html", page);
}

}  // namespace m6rec
