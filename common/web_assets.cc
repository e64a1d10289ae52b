#include "common/web_assets.h"

namespace m6rec {

namespace {

constexpr const char* kStyle = R"css(
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; max-width: 1200px; }
h1 { font-size: 22px; } h2 { font-size: 17px; margin-top: 28px; border-bottom: 1px solid #ddd; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); gap: 18px; }
.card { border: 1px solid #e3e3e3; border-radius: 6px; padding: 10px; background: #fff; }
.card canvas { width: 100% !important; height: 300px !important; }
table { border-collapse: collapse; font-size: 13px; } td, th { border: 1px solid #ddd; padding: 3px 8px; }
th { background: #f5f5f5; text-align: left; } .num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f7f7f7; padding: 10px; overflow: auto; font-size: 12px; }
.dead { color: #b00; font-weight: bold; } .ok { color: #070; } .muted { color: #777; }
)css";

// The charting helper (ours): thin wrappers over Chart.js that also record what they drew.
constexpr const char* kHelper = R"js(
window.onerror = function (msg, src, line) {
  var b = document.body; if (!b) return false;
  b.dataset.errors = (b.dataset.errors ? b.dataset.errors + ' | ' : '') + msg + ' (' + line + ')';
  return false;
};
var M6_COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2',
                 '#7f7f7f', '#bcbd22', '#17becf'];
function m6count(canvas, n) {
  canvas.dataset.points = String(n);
  var charts = document.querySelectorAll('canvas[data-points]').length;
  document.body.dataset.charts = String(charts);
}
function m6xy(kind, id, spec) {
  var canvas = document.getElementById(id);
  var n = 0;
  var datasets = (spec.series || []).map(function (s, i) {
    n += s.points.length;
    return { label: s.label, data: s.points.map(function (p) { return { x: p[0], y: p[1] }; }),
             borderColor: M6_COLORS[i % M6_COLORS.length],
             backgroundColor: M6_COLORS[i % M6_COLORS.length] + (kind === 'scatter' ? '99' : ''),
             pointRadius: kind === 'scatter' ? 2 : (s.points.length > 60 ? 0 : 2),
             borderWidth: 1.5, showLine: kind !== 'scatter', tension: 0 };
  });
  var old = Chart.getChart ? Chart.getChart(canvas) : null;
  if (old) old.destroy();
  var chart = new Chart(canvas, {
    type: 'scatter', data: { datasets: datasets },
    options: { animation: false, responsive: true, maintainAspectRatio: false,
               plugins: { title: { display: true, text: spec.title },
                          legend: { display: datasets.length > 1 } },
               scales: { x: { type: 'linear', title: { display: true, text: spec.x || '' },
                              ticks: (spec.x === 'epoch' || spec.x === 'chunk') ? { precision: 0 } : {} },
                         y: { type: spec.logY ? 'logarithmic' : 'linear',
                              title: { display: true, text: spec.y || '' } } } } });
  m6count(canvas, n);
  return chart;
}
function m6line(id, spec) { return m6xy('line', id, spec); }
function m6scatter(id, spec) { return m6xy('scatter', id, spec); }
function m6bars(id, spec) {
  var canvas = document.getElementById(id);
  var n = 0;
  var datasets = (spec.series || []).map(function (s, i) {
    n += s.values.length;
    return { label: s.label, data: s.values, backgroundColor: M6_COLORS[i % M6_COLORS.length] + 'aa' };
  });
  var old = Chart.getChart ? Chart.getChart(canvas) : null;
  if (old) old.destroy();
  var chart = new Chart(canvas, {
    type: 'bar', data: { labels: spec.labels, datasets: datasets },
    options: { animation: false, responsive: true, maintainAspectRatio: false,
               plugins: { title: { display: true, text: spec.title } },
               scales: { x: { title: { display: true, text: spec.x || '' } },
                         y: { title: { display: true, text: spec.y || '' } } } } });
  m6count(canvas, n);
  return chart;
}
// The parameter-server curves of a scheduler history ({workers: {rank: [points]}, servers:
// {rank: [points]}}), as per-interval values between consecutive heartbeats: requests/s and
// hot-tier hit rate per server, the server's service time per pull and push (microseconds),
// and how long each worker's training loop blocked on pulls and pushes (ms per step).
function m6psSeries(h) {
  var out = { rate: [], hit: [], service: [], wait: [] };
  function deltas(l, f) {
    var pts = [];
    for (var i = 1; i < l.length; ++i) {
      var v = f(l[i], l[i - 1]);
      if (typeof v === 'number' && isFinite(v)) pts.push([l[i].t, v]);
    }
    return pts;
  }
  Object.keys(h.servers || {}).forEach(function (k) {
    var l = h.servers[k];
    out.rate.push({ label: 'server ' + k, points: deltas(l, function (a, b) {
      return a.t > b.t ? (a.requests - b.requests) / (a.t - b.t) : null; }) });
    out.hit.push({ label: 'server ' + k, points: deltas(l, function (a, b) {
      var n = (a.hot_hits - b.hot_hits) + (a.cold_reads - b.cold_reads);
      return n > 0 ? (a.hot_hits - b.hot_hits) / n : null; }) });
    ['pull', 'push'].forEach(function (op) {
      out.service.push({ label: 'server ' + k + ' ' + op, points: deltas(l, function (a, b) {
        var count = op === 'pull' ? 'pulls' : 'pushes', n = a[count] - b[count];
        return n > 0 && a[op + '_us'] !== undefined ? (a[op + '_us'] - b[op + '_us']) / n : null; }) });
    });
  });
  Object.keys(h.workers || {}).forEach(function (k) {
    ['pull', 'push'].forEach(function (op) {
      out.wait.push({ label: 'worker ' + k + ' ' + op, points: deltas(h.workers[k], function (a, b) {
        var n = a.steps - b.steps, w = a[op + '_wait_s'], v = b[op + '_wait_s'];
        return n > 0 && typeof w === 'number' && typeof v === 'number' && w >= v ? (w - v) * 1000 / n : null; }) });
    });
  });
  return out;
}
// A canvas as a PNG data URL on a white background (a chart's canvas is transparent: pasted
// into a page with a dark theme it would be unreadable).
function m6png(canvas) {
  var c = document.createElement('canvas');
  c.width = canvas.width; c.height = canvas.height;
  var g = c.getContext('2d');
  g.fillStyle = '#fff'; g.fillRect(0, 0, c.width, c.height);
  g.drawImage(canvas, 0, 0);
  return c.toDataURL('image/png');
}
function m6esc(s) {
  return String(s).replace(/[&<>"']/g, function (c) {
    return { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c];
  });
}
function m6table(rows) {
  if (!rows.length) return '<p class="muted">none</p>';
  var h = '<table><tr>' + rows[0].map(function (c) { return '<th>' + m6esc(c) + '</th>'; }).join('') + '</tr>';
  for (var i = 1; i < rows.length; ++i)
    h += '<tr>' + rows[i].map(function (c) {
      return typeof c === 'number' ? '<td class="num">' + (Number.isInteger(c) ? c : c.toFixed(4)) + '</td>'
                                   : '<td>' + m6esc(c) + '</td>';
    }).join('') + '</tr>';
  return h + '</table>';
}
)js";

}  // namespace

std::string HtmlEscape(const std::string& s) {
  std::string o;
  o.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&':
        o += "&amp;";
        break;
      case '<':
        o += "&lt;";
        break;
      case '>':
        o += "&gt;";
        break;
      case '"':
        o += "&quot;";
        break;
      case '\'':
        o += "&#39;";
        break;
      default:
        o += c;
    }
  }
  return o;
}

std::string ScriptJson(const nlohmann::json& j) {
  const std::string s = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  std::string o;
  o.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '<' && i + 1 < s.size() && s[i + 1] == '/') {
      o += "<\\/";
      ++i;
    } else {
      o += s[i];
    }
  }
  return o;
}

std::string HtmlPage(const std::string& title, const std::string& body, const std::string& script) {
  std::string p;
  p.reserve(260000 + body.size() + script.size());
  p += "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>";
  p += HtmlEscape(title);
  p += "</title>\n<style>";
  p += kStyle;
  p += "</style>\n<script>";
  p += ChartJs();
  p += "</script>\n<script>";
  p += kHelper;
  p += "</script>\n</head><body>\n";
  p += body;
  p += "\n<script>\n";
  p += script;
  p += "\n</script>\n</body></html>\n";
  return p;
}

}  // namespace m6rec
