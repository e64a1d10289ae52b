// What the project's web pages share (the run report, launch/report.h; the scheduler's live
// dashboard, scheduler/dashboard.h): Chart.js compiled into the binary from Debian's
// libjs-chart.js, so every page is one self-contained file that opens offline, and a small
// charting helper of our own on top of it.
// Pages record what they drew for the browser tests: every chart's canvas carries
// data-points (the points it plots), the body data-charts (charts drawn) and data-errors
// (script errors caught by window.onerror; absent when none).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace m6rec {

// Chart.js (the UMD build, defines window.Chart).
const char* ChartJs();

// `s` with & < > " ' as HTML entities.
std::string HtmlEscape(const std::string& s);

// JSON to embed in a <script>: "</" is written "<\/" so the data cannot close the script.
std::string ScriptJson(const nlohmann::json& j);

// A whole page: <head> with the title, the style sheet and Chart.js and the helper inline,
// then `body` (HTML), then `script` (JavaScript run after the body is parsed).
// The helper defines
//   m6line(canvasId, {title, x, y, series: [{label, points: [[x, y], ...]}], logY})
//   m6scatter(canvasId, {title, x, y, series: [{label, points: [[x, y], ...]}]})
//   m6bars(canvasId, {title, labels: [...], series: [{label, values: [...]}]})
// each returning the Chart (animation off), and m6table(rows) -> an HTML table string.
std::string HtmlPage(const std::string& title, const std::string& body, const std::string& script);

}  // namespace m6rec
