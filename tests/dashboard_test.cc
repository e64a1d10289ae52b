// Seeing a run as a person would (issue 14): the scheduler's live dashboard of a running local
// job and a finished run's report.html, each opened in a real headless Chromium that runs their
// scripts; /metrics read by a real Prometheus text parser (python3-prometheus-client); the
// HTTP routes exact. Screenshots go to <build>/test-artifacts/ (CI keeps them).
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <thread>

#include "cluster_util.h"
#include "common/util.h"
#include "test_util.h"

namespace m6rec {
namespace {

using nlohmann::json;
using testing::Background;
using testing::Binary;
using testing::RunCommand;
using testing::TempDir;

testing::HttpReply Get(int port, const std::string& target) {
  return testing::Http(port, "GET", target);
}

std::string ArtifactDir() {
  const std::string d = std::filesystem::path(Binary()).parent_path().string() + "/test-artifacts";
  std::filesystem::create_directories(d);
  return d;
}

// Chromium, headless, on `url`: the DOM after its scripts ran (virtual time lets timers fire),
// and a screenshot at `png`.
std::string Browse(const std::string& url, const std::string& png) {
  const std::string chromium = testing::OnPath("chromium");
  if (chromium.empty()) {
    ADD_FAILURE() << "chromium is not installed: launch/install-deps.sh --with-checks installs "
                     "Debian's chromium, which the browser tests need";
    return "";
  }
  const std::vector<std::string> common = {chromium,
                                           "--headless",
                                           "--no-sandbox",
                                           "--disable-gpu",
                                           "--disable-dev-shm-usage",
                                           "--no-first-run",
                                           "--virtual-time-budget=4000",
                                           "--window-size=1280,2400"};
  std::vector<std::string> shot = common;
  shot.push_back("--screenshot=" + png);
  shot.push_back(url);
  auto s = RunCommand(shot, 120);
  EXPECT_EQ(s.exit_code, 0) << s.output;
  std::vector<std::string> dump = common;
  dump.push_back("--dump-dom");
  dump.push_back(url);
  auto d = RunCommand(dump, 120);
  EXPECT_EQ(d.exit_code, 0) << d.output;
  return d.stdout_text;
}

// The body tag's data-NAME attribute ("" when absent).
std::string BodyData(const std::string& dom, const std::string& name) {
  std::smatch m;
  const std::regex body("<body([^>]*)>");
  if (!std::regex_search(dom, m, body)) return "";
  const std::string attrs = m[1];
  std::smatch a;
  if (!std::regex_search(attrs, a, std::regex("data-" + name + "=\"([^\"]*)\""))) return "";
  return a[1];
}

// How many canvases plot at least one point.
int ChartsWithData(const std::string& dom) {
  int n = 0;
  const std::regex pts("data-points=\"([0-9]+)\"");
  for (auto it = std::sregex_iterator(dom.begin(), dom.end(), pts); it != std::sregex_iterator();
       ++it)
    if (std::stoi((*it)[1]) > 0) ++n;
  return n;
}

// The points the report's chart saved as `file` plots (-1 when the page has no such chart).
int PointsOf(const std::string& dom, const std::string& file) {
  std::smatch m;
  if (!std::regex_search(dom, m,
                         std::regex("data-file=\"" + file + "\"[^>]*data-points=\"([0-9]+)\"")))
    return -1;
  return std::stoi(m[1]);
}

TEST(Dashboard, ALiveJobsPageMetricsAndFinishedReportRenderInABrowser) {
  TempDir dir;
  // The workers are paused while the browser looks (below): a heartbeat timeout longer than
  // that pause keeps the scheduler from declaring them lost.
  std::string config = testing::M6Config(6);
  const std::string beat = "heartbeat_timeout_ms: 5000";
  ASSERT_NE(config.find(beat), std::string::npos);
  config.replace(config.find(beat), beat.size(), "heartbeat_timeout_ms: 60000");
  testing::WriteFile(dir / "job.yaml", config);
  Background job({Binary(), "train", "--config", dir / "job.yaml", "--run-dir", dir / "run"},
                 dir / "job.log");
  // The scheduler's ports ("CONTROL HTTP"), then a bounded wait for the event: both workers'
  // progress and both servers' counters have reached the scheduler.
  std::string ports = testing::WaitForFile(dir / "run/scheduler.port", 120);
  ASSERT_FALSE(ports.empty()) << job.Output();
  int control = 0, port = 0;
  std::istringstream(ports) >> control >> port;
  ASSERT_GT(port, 0) << ports;
  json status;
  for (int i = 0; i < 1200; ++i) {
    testing::HttpReply p = Get(port, "/status");
    status = json::parse(p.body, nullptr, false);
    int reporting = 0;  // workers with steps done, servers with requests served
    if (status.is_object())
      for (const auto& n : status["nodes"])
        if (n.contains("stats") &&
            (n["stats"].value("steps", 0) > 0 || n["stats"].value("requests", 0) > 0))
          ++reporting;
    if (reporting == 4) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(status.is_object() && status.contains("history")) << status.dump() << job.Output();
  // The page must be seen while the job runs, and the job is short (it may finish before a
  // browser has started): every node has reported, so pause the workers (SIGSTOP) until the
  // browser is done; the scheduler and servers go on serving.
  const json pids = json::parse(testing::WaitForFile(dir / "run/pids.json", 60), nullptr, false);
  std::vector<pid_t> workers;
  for (const char* w : {"worker 0", "worker 1"}) {
    ASSERT_TRUE(pids.is_object() && pids.contains(w)) << pids.dump();
    workers.push_back(pid_t(pids[w].get<int>()));
  }
  struct ResumeOnExit {  // a failed assertion below must not leave stopped workers behind
    const std::vector<pid_t>& pids;
    ~ResumeOnExit() {
      for (pid_t w : pids) ::kill(w, SIGCONT);
    }
  } resume{workers};
  for (pid_t w : workers) ASSERT_EQ(::kill(w, SIGSTOP), 0) << "worker pid " << w;
  EXPECT_EQ(status["history"]["workers"].size(), 2u) << status.dump();

  // Exact routes.
  EXPECT_EQ(Get(port, "/statusX").status, 404);
  EXPECT_EQ(Get(port, "/status/").status, 404);
  EXPECT_EQ(Get(port, "/healthz").status, 200);
  EXPECT_EQ(Get(port, "/status?x=1").status, 200) << "a query string is not part of the path";

  // /metrics through a real Prometheus text parser.
  testing::HttpReply metrics = Get(port, "/metrics");
  ASSERT_EQ(metrics.status, 200);
  testing::WriteFile(dir / "metrics.txt", metrics.body);
  auto parsed =
      RunCommand({"/usr/bin/python3", "-c",
                  "import sys, json\n"
                  "from prometheus_client.parser import text_string_to_metric_families as parse\n"
                  "fams = {f.name: [(s.labels, s.value) for s in f.samples] for f in "
                  "parse(open(sys.argv[1]).read())}\n"
                  "print(json.dumps(fams))\n",
                  dir / "metrics.txt"},
                 60);
  ASSERT_EQ(parsed.exit_code, 0)
      << "python3-prometheus-client (launch/install-deps.sh --with-checks) parses /metrics:\n"
      << parsed.output << "\n"
      << metrics.body;
  const json fams = json::parse(parsed.stdout_text, nullptr, false);
  ASSERT_TRUE(fams.is_object()) << parsed.stdout_text;
  ASSERT_TRUE(fams.contains("m6rec_node_up")) << parsed.stdout_text;
  EXPECT_EQ(fams["m6rec_node_up"].size(), 4u) << "2 servers and 2 workers";
  ASSERT_TRUE(fams.contains("m6rec_worker_steps")) << "counter family of m6rec_worker_steps_total";
  for (const auto& s : fams["m6rec_worker_steps"])
    if (s[0].contains("rank")) {
      EXPECT_GT(s[1].get<double>(), 0.0) << s.dump();
    }
  ASSERT_TRUE(fams.contains("m6rec_server_requests")) << parsed.stdout_text;
  // Pull/push latency: what the workers' loops blocked on, what the servers spent serving.
  for (const char* fam : {"m6rec_worker_ps_wait_seconds", "m6rec_server_busy_seconds"}) {
    ASSERT_TRUE(fams.contains(fam)) << fam << "\n" << parsed.stdout_text;
    double pull = 0, push = 0;
    for (const auto& s : fams[fam])
      (s[0].value("op", "") == "pull" ? pull : push) += s[1].get<double>();
    EXPECT_GT(pull, 0.0) << fam << ": " << fams[fam].dump();
    EXPECT_GT(push, 0.0) << fam << ": " << fams[fam].dump();
  }

  // The dashboard in a browser: its script polled /status and drew the workers' curves.
  const std::string art = ArtifactDir();
  const std::string dash =
      Browse("http://127.0.0.1:" + std::to_string(port) + "/", art + "/dashboard.png");
  EXPECT_EQ(BodyData(dash, "errors"), "") << "no script errors on the dashboard";
  EXPECT_GE(std::atoi(BodyData(dash, "polls").c_str()), 1) << dash.substr(0, 2000);
  EXPECT_GE(ChartsWithData(dash), 3) << "loss, samples/s and PS charts hold points";
  EXPECT_NE(dash.find("worker"), std::string::npos);
  for (pid_t w : workers) EXPECT_EQ(::kill(w, SIGCONT), 0) << "worker pid " << w;

  ASSERT_TRUE(job.Wait(600)) << job.Output();
  ASSERT_EQ(job.exit_code(), 0) << job.Output();
  // The finished run's report, opened from disk (offline: everything inline).
  ASSERT_TRUE(std::filesystem::exists(dir / "run/report.html")) << job.Output();
  const std::string report = Browse("file://" + (dir / "run/report.html"), art + "/report.png");
  EXPECT_EQ(BodyData(report, "errors"), "") << "no script errors in the report";
  EXPECT_EQ(BodyData(report, "ready"), "1") << report.substr(0, 2000);
  EXPECT_GE(ChartsWithData(report), 10) << "loss, metrics, gates, item map and score charts";
  EXPECT_NE(report.find("HR@10"), std::string::npos);
  // The scheduler's timeline: what happened when, and the cluster's curves over time.
  ASSERT_TRUE(std::filesystem::exists(dir / "run/timeline.json"));
  // (Rendered: the script turned the data into table cells.)
  for (const char* event :
       {"<td>cluster formed</td>", "<td>epoch 2</td>", "<td>evaluated epoch 1</td>",
        "<td>checkpoint at step", "<td>job complete</td>"})
    EXPECT_NE(report.find(event), std::string::npos) << "the timeline table shows " << event;
  EXPECT_GE(ChartsWithData(report), 16)
      << "+ throughput, PS rates, hit rate, PS service time and waits, and the timeline";
  // Pull and push, per worker (waits) and per server (service time): 4 series with points.
  EXPECT_GE(PointsOf(report, "ps-wait"), 4) << "workers' pull and push waits over time";
  EXPECT_GE(PointsOf(report, "ps-service"), 4) << "servers' time per pull and push";
  // The PCA maps of the items and (the model has a row per user) of the users.
  EXPECT_GE(PointsOf(report, "item-map"), 3);
  EXPECT_GE(PointsOf(report, "user-map"), 3);
  EXPECT_EQ(report.find("<script src"), std::string::npos) << "everything inline: opens offline";
  EXPECT_EQ(report.find("<link"), std::string::npos);

  // m6rec report compares runs on one page.
  auto cmp =
      RunCommand({Binary(), "report", dir / "run", dir / "run", "--out", dir / "cmp.html"}, 60);
  ASSERT_EQ(cmp.exit_code, 0) << cmp.output;
  auto one = RunCommand({Binary(), "report", dir / "run", dir / "run"}, 60);
  EXPECT_EQ(one.exit_code, 2) << "several runs need --out\n" << one.output;

  // Every chart as a PNG file for docs/ (drawn by Chromium): one per chart with data, named by
  // its title, each a real PNG.
  auto charts = RunCommand(
      {Binary(), "report", dir / "run", "--out", dir / "r.html", "--charts", dir / "charts"}, 240);
  ASSERT_EQ(charts.exit_code, 0) << charts.output;
  int pngs = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir / "charts")) {
    std::string head(8, '\0');
    std::ifstream(e.path(), std::ios::binary).read(head.data(), 8);
    EXPECT_EQ(head, std::string("\x89PNG\r\n\x1a\n", 8)) << e.path();
    EXPECT_GT(std::filesystem::file_size(e.path()), 2000u) << e.path() << ": a drawn chart";
    ++pngs;
  }
  EXPECT_EQ(pngs, ChartsWithData(report)) << charts.output;
  EXPECT_TRUE(std::filesystem::exists(dir / "charts/training-loss-per-epoch.png")) << charts.output;
  EXPECT_TRUE(std::filesystem::exists(dir / "charts/ps-wait.png")) << charts.output;
  std::filesystem::copy(dir / "charts/training-loss-per-epoch.png",
                        ArtifactDir() + "/chart-loss.png",
                        std::filesystem::copy_options::overwrite_existing);
}

}  // namespace
}  // namespace m6rec
