// Integration: the cluster launchers — mpirun (one host, and two "hosts" as network
// namespaces joined by a veth pair) and Slurm (both sbatch scripts and srun on a real
// single-node Slurm) run the same job as the local launcher.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "cluster_util.h"
#include "common/util.h"
#include "test_util.h"
#include "worker/collective.h"

namespace m6rec {

using nlohmann::json;
using namespace m6rec::testing;

TEST(Cluster, MpirunRunsTheWholeJobLikeTheLocalLauncher) {
  // mpirun -np 5: rank 0 the scheduler, ranks 1-2 servers, ranks 3-4 workers; MPI carries the
  // rendezvous and the workers' allreduce.
  const std::string mpirun = OnPath("mpirun");
  if (!HaveMpi() || mpirun.empty()) {
    std::fprintf(stderr,
                 "NOTE: no MPI in this build or no mpirun on PATH: this test checked nothing\n");
    GTEST_SKIP() << "MPI not available";
  }
  setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
  setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
  setenv("OMPI_MCA_btl", "self,vader,tcp", 1);
  setenv("OMPI_MCA_btl_tcp_if_include", "lo", 1);
  TempDir dir;
  std::string cfg = testing::WriteFile(dir / "job.yaml", M6Config(3));
  auto r = RunCommand({mpirun, "--oversubscribe", "-np", "5", Binary(), "train", "--config", cfg,
                       "--run-dir", dir / "mpi"},
                      300);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  json res = ReadJson(dir / "mpi/result.json");
  ASSERT_TRUE(res.contains("test")) << res.dump();
  ASSERT_EQ(res["workers"].size(), 2u);
  EXPECT_EQ(res["workers"][0]["collective"], "mpi");
  EXPECT_EQ(res["workers"][0]["param_fingerprints"], res["workers"][1]["param_fingerprints"]);
  EXPECT_EQ(res["test"]["users"], 600);
  auto l =
      RunCommand({Binary(), "train", "--local", "--config", cfg, "--run-dir", dir / "local"}, 240);
  ASSERT_EQ(l.exit_code, 0) << l.output;
  json local = ReadJson(dir / "local/result.json");
  EXPECT_NEAR(res["test"]["HR@10"].get<double>(), local["test"]["HR@10"].get<double>(), 0.06)
      << "mpirun and the local launcher train the same job";
  // Too few processes: every rank stops, with the reason, non-zero.
  auto few = RunCommand({mpirun, "--oversubscribe", "-np", "3", Binary(), "train", "--config", cfg,
                         "--run-dir", dir / "few"},
                        120);
  EXPECT_NE(few.exit_code, 0);
  EXPECT_NE(few.output.find("start at least 4"), std::string::npos) << few.output;
}

TEST(Cluster, MpirunAcrossTwoHostsBindsEachHostsAddress) {
  // Two "hosts" on this machine: network namespaces joined by a veth pair, each with its own
  // address and (through a UTS namespace) its own hostname. mpirun runs in the first and starts
  // the second's ranks through an rsh agent, as it would over ssh. Ranks: 0 scheduler, one server
  // per host (cluster.placement: server_per_node), the rest workers; cluster.host: auto.
  const std::string ip = OnPath("ip"), mpirun = OnPath("mpirun"), unshare = OnPath("unshare");
  if (!HaveMpi() || mpirun.empty() || ip.empty() || unshare.empty()) {
    std::fprintf(stderr, "NOTE: needs MPI, mpirun, ip and unshare: this test checked nothing\n");
    GTEST_SKIP() << "MPI or iproute2 missing";
  }
  const int tag = int(getpid() % 200) + 20;
  const std::string h0 = "m6rec" + std::to_string(getpid()) + "a",
                    h1 = "m6rec" + std::to_string(getpid()) + "b";
  const std::string net = "10.201." + std::to_string(tag) + ".",
                    v0 = "m6v" + std::to_string(tag) + "a", v1 = "m6v" + std::to_string(tag) + "b";
  auto probe = RunCommand({ip, "netns", "add", h0}, 10);
  if (probe.exit_code != 0) {
    std::fprintf(stderr,
                 "NOTE: cannot create network namespaces here (%s): needs root / CAP_SYS_ADMIN; "
                 "this test checked nothing\n",
                 probe.output.c_str());
    GTEST_SKIP() << "no network namespaces";
  }
  struct Namespaces {
    std::string ip, a, b;
    ~Namespaces() {
      for (const auto& n : {a, b}) {
        // Nothing may outlive the test inside a namespace.
        RunCommand({"/bin/sh", "-c", ip + " netns pids " + n + " | xargs -r kill -9"}, 10);
        RunCommand({ip, "netns", "del", n}, 10);
      }
    }
  } cleanup{ip, h0, h1};
  for (const std::vector<std::string>& c : std::vector<std::vector<std::string>>{
           {ip, "netns", "add", h1},
           {ip, "link", "add", v0, "type", "veth", "peer", "name", v1},
           {ip, "link", "set", v0, "netns", h0},
           {ip, "link", "set", v1, "netns", h1},
           {ip, "-n", h0, "addr", "add", net + "1/24", "dev", v0},
           {ip, "-n", h1, "addr", "add", net + "2/24", "dev", v1},
           {ip, "-n", h0, "link", "set", v0, "up"},
           {ip, "-n", h1, "link", "set", v1, "up"},
           {ip, "-n", h0, "link", "set", "lo", "up"},
           {ip, "-n", h1, "link", "set", "lo", "up"}}) {
    auto r = RunCommand(c, 10);
    ASSERT_EQ(r.exit_code, 0) << c[1] << " " << c[2] << ": " << r.output;
  }
  TempDir dir;
  // mpirun's "ssh": run the command in the host's namespace under the host's name.
  const std::string agent = testing::WriteFile(
      dir / "agent.sh",
      "#!/bin/sh\nhost=$1; shift\nexec " + ip + " netns exec \"$host\" " + unshare +
          " --uts sh -c 'hostname \"$1\"; shift; eval \"$*\"' sh \"$host\" \"$@\"\n");
  ASSERT_EQ(chmod(agent.c_str(), 0755), 0);
  const std::string hostfile =
      testing::WriteFile(dir / "hosts", h0 + " slots=3\n" + h1 + " slots=2\n");
  const std::string cfg = testing::WriteFile(dir / "job.yaml", M6Config(2));
  const std::map<std::string, std::string> env = {
      {"OMPI_ALLOW_RUN_AS_ROOT", "1"},    {"OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1"},
      {"OMPI_MCA_plm_rsh_agent", agent},  {"OMPI_MCA_oob_tcp_if_include", net + "0/24"},
      {"OMPI_MCA_btl", "self,vader,tcp"}, {"OMPI_MCA_btl_tcp_if_include", net + "0/24"}};
  auto launch = [&](const std::string& run, const std::string& host) {
    return RunCommand(
        {ip, "netns", "exec", h0, unshare, "--uts", "/bin/sh", "-c",
         "hostname " + h0 + "; exec " + mpirun + " --hostfile " + hostfile + " -np 5 " + Binary() +
             " train --config " + cfg + " --set cluster.host=" + host +
             " --set cluster.placement=server_per_node --run-dir " + run},
        300, env);
  };
  auto r = launch(dir / "run", "auto");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("over 5 processes on 2 host(s)"), std::string::npos) << r.output;
  // Each host's server and worker registered from that host's own address; nobody from loopback.
  for (const std::string who : {"server 0", "server 1", "worker 0", "worker 1"})
    EXPECT_NE(r.output.find(who + " registered from " + net), std::string::npos) << who << "\n"
                                                                                 << r.output;
  EXPECT_NE(r.output.find("registered from " + net + "1:"), std::string::npos);
  EXPECT_NE(r.output.find("registered from " + net + "2:"), std::string::npos);
  EXPECT_EQ(r.output.find("registered from 127.0.0.1"), std::string::npos);
  json res = ReadJson(dir / "run/result.json");
  ASSERT_TRUE(res.contains("test")) << res.dump();
  EXPECT_EQ(res["test"]["users"], 600);
  ASSERT_EQ(res["workers"].size(), 2u);
  EXPECT_EQ(res["workers"][0]["collective"], "mpi");
  EXPECT_EQ(res["workers"][0]["param_fingerprints"], res["workers"][1]["param_fingerprints"]);
  EXPECT_GT(res["test"]["HR@10"].get<double>(), res["popularity"]["HR@10"].get<double>() + 0.1);
  // Loopback cannot span hosts: every rank stops, with the reason.
  auto lo = launch(dir / "lo", "127.0.0.1");
  EXPECT_NE(lo.exit_code, 0);
  EXPECT_NE(lo.output.find("spans 2 hosts but cluster.host is 127.0.0.1"), std::string::npos)
      << lo.output;
}

TEST(Cluster, SlurmRunsBothSbatchScriptsAndSrun) {
  // A real single-node Slurm (Debian's slurmctld + slurmd, launch/slurm/single-node.sh) runs the
  // sbatch scripts users copy, unchanged but for command-line options: srun.sbatch (roles from
  // SLURM_PROCID, file rendezvous, zmq collective) and mpirun.sbatch (MPI inside the allocation).
  std::map<std::string, std::string> bin;
  for (const char* p : {"slurmctld", "slurmd", "sbatch", "srun", "scontrol"})
    if ((bin[p] = OnPath(p)).empty()) {
      std::fprintf(
          stderr,
          "NOTE: '%s' is not installed (launch/install-deps.sh --with-slurm; CI installs it): "
          "this test checked nothing\n",
          p);
      GTEST_SKIP() << "no Slurm on this machine";
    }
  TempDir dir;
  const std::string slurm_dir = dir / "slurm";
  auto up =
      RunCommand({testing::SourceDir() + "/launch/slurm/single-node.sh", "start", slurm_dir}, 60);
  ASSERT_EQ(up.exit_code, 0) << up.output;
  struct StopDaemons {
    std::string dir;
    ~StopDaemons() {
      RunCommand({testing::SourceDir() + "/launch/slurm/single-node.sh", "stop", dir}, 30);
    }
  } stop{slurm_dir};
  const std::map<std::string, std::string> env = {{"SLURM_CONF", slurm_dir + "/slurm.conf"},
                                                  {"OMPI_MCA_btl", "self,vader,tcp"},
                                                  {"OMPI_MCA_btl_tcp_if_include", "lo"},
                                                  {"OMPI_MCA_oob_tcp_if_include", "lo"}};
  const std::string cfg = testing::WriteFile(dir / "job.yaml", M6Config(2));

  std::map<std::string, std::string> job_of;  // script -> job id
  for (const std::string script : {"srun", "mpirun"}) {
    const std::string run = dir / script;
    auto sub = RunCommand(
        {bin["sbatch"], "--parsable", "--nodes=1", "--ntasks-per-node=5", "--cpus-per-task=1",
         "--chdir=" + testing::SourceDir(), "--output=" + run + ".out",
         "--export=ALL,M6REC_BIN=" + Binary() + ",M6REC_CONFIG=" + cfg + ",M6REC_RUN_DIR=" + run,
         testing::SourceDir() + "/launch/slurm/" + script + ".sbatch"},
        30, env);
    ASSERT_EQ(sub.exit_code, 0) << sub.output;
    job_of[script] = sub.output.substr(0, sub.output.find_first_of(";\n"));
  }
  for (const auto& [script, id] : job_of) {
    std::string state;
    for (int i = 0; i < 600; ++i) {  // bounded: 5 minutes
      auto show = RunCommand({bin["scontrol"], "show", "job", id}, 10, env);
      const size_t at = show.output.find("JobState=");
      state = at == std::string::npos
                  ? "?"
                  : show.output.substr(at + 9, show.output.find(' ', at) - at - 9);
      if (state != "PENDING" && state != "RUNNING" && state != "CONFIGURING" &&
          state != "COMPLETING")
        break;
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
    const std::string run = dir / script;
    auto out = ReadFileToString(run + ".out");
    EXPECT_EQ(state, "COMPLETED") << script << ".sbatch, job " << id << ":\n"
                                  << (out.ok() ? *out : "(no output)");
    json res = ReadJson(run + "/result.json");
    ASSERT_TRUE(res.contains("test")) << script << ": " << res.dump();
    EXPECT_EQ(res["test"]["users"], 600);
    ASSERT_EQ(res["workers"].size(), 2u);
    EXPECT_EQ(res["workers"][0]["collective"], script == "srun" ? "zmq" : "mpi");
    EXPECT_EQ(res["workers"][0]["param_fingerprints"], res["workers"][1]["param_fingerprints"]);
    EXPECT_GT(res["test"]["HR@10"].get<double>(), res["popularity"]["HR@10"].get<double>() + 0.1)
        << script;
  }
  // srun with too few tasks: rank 0 says why, the step is torn down, srun exits non-zero.
  auto few = RunCommand({bin["srun"], "--ntasks=3", "--kill-on-bad-exit=1", Binary(), "train",
                         "--config", cfg, "--run-dir", dir / "few"},
                        60, env);
  EXPECT_NE(few.exit_code, 0);
  EXPECT_NE(few.output.find("start at least 4"), std::string::npos) << few.output;
}

}  // namespace m6rec
