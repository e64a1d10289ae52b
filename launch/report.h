// The run report: report.html in a run directory, one self-contained page (Chart.js inline,
// common/web_assets.h) that opens offline. Written by the launchers at the end of every job and
// by `m6rec report RUN_DIR...`, which also compares several runs (an ablation) on one page.
// It reads what a run leaves: result.json, metrics.jsonl, config.yaml and, when present,
// report-data.json (what the job measured for the report: the item map and score
// distributions, written by the launcher at the end). Charts: training loss and every
// evaluated metric over epochs and over wall time (per task and domain where the run has
// them), the fusion gates per source over training, a stream job's prequential curve, and the
// result and configuration as tables.
#pragma once

#include <string>
#include <vector>

#include "common/status.h"

namespace m6rec {

// The report page over one or more run directories.
StatusOr<std::string> BuildReport(const std::vector<std::string>& run_dirs);
// BuildReport({run_dir}) written to run_dir/report.html.
Status WriteRunReport(const std::string& run_dir);

// Every chart of the report page at `report_html` as a PNG in out_dir, named by the chart's
// title (the page's own PNG links use the same names), rendered by a headless Chromium
// (M6REC_CHROMIUM, else chromium on PATH) at `width_px` CSS pixels wide, 2x scale. Returns
// the files written. For pictures in docs/ and in papers.
StatusOr<std::vector<std::string>> ExportCharts(const std::string& report_html,
                                                const std::string& out_dir, int width_px = 1100);

// run_dir/report-data.json from the run's checkpoint (the best, else the newest): the item map
// (up to 2,000 items' id rows by their first two principal components, grouped by domain, or
// by popularity quarter in a one-domain run) and, when the model trains a row per user, the
// user map (grouped by domain or history-length quarter). NotFound when the run kept no
// checkpoint.
Status WriteReportData(const std::string& run_dir);

}  // namespace m6rec
