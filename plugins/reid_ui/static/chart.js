/* Charts of the ReID validation plugin, plain DOM + SVG (no library: the UI must work air-gapped).
 * - figure.chart: the trend of one metric of one series, drawn from GET <root>/api/series.
 * - figure.batch-chart: a run report's throughput and p99 latency by batch size (rows in data-rows).
 * Every point has a hover tooltip (run, date and time, value); a trend point opens its run's report. */
(function () {
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";
  var W = 400, H = 220, M = { top: 14, right: 16, bottom: 38, left: 58 };
  var tip = null;

  function el(name, attrs, parent) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (parent) parent.appendChild(node);
    return node;
  }

  function fmt(v) {
    if (v === null || v === undefined || !isFinite(v)) return "–";
    var a = Math.abs(v);
    return a >= 1000 ? v.toFixed(0) : a >= 100 ? v.toFixed(1) : v.toFixed(2);
  }

  function when(iso) {  // "2026-11-30T09:15:02+00:00" -> "2026-11-30 09:15" (UTC, as stored)
    return String(iso).slice(0, 16).replace("T", " ");
  }

  function niceTicks(lo, hi, n) {
    var span = hi - lo, step = Math.pow(10, Math.floor(Math.log10(span / n)));
    [1, 2, 5, 10].some(function (m) { if (span / (step * m) <= n) { step *= m; return true; } return false; });
    var out = [];
    for (var t = Math.ceil(lo / step) * step; t <= hi + 1e-9; t += step) out.push(t);
    return out;
  }

  function showTip(ev, lines) {
    if (!tip) {
      tip = document.createElement("div");
      tip.className = "chart-tip";
      tip.setAttribute("role", "tooltip");
      document.body.appendChild(tip);
    }
    tip.textContent = "";
    lines.forEach(function (line, i) {
      var div = document.createElement("div");
      if (i === 0) div.className = "tip-title";
      div.textContent = line;
      tip.appendChild(div);
    });
    tip.hidden = false;
    var x = ev.clientX + 14, y = ev.clientY + 14, r = tip.getBoundingClientRect();
    if (x + r.width > window.innerWidth - 4) x = ev.clientX - r.width - 14;
    if (y + r.height > window.innerHeight - 4) y = ev.clientY - r.height - 14;
    tip.style.left = (x + window.scrollX) + "px";
    tip.style.top = (y + window.scrollY) + "px";
  }

  function hideTip() { if (tip) tip.hidden = true; }

  function withTip(node, lines) {
    el("title", {}, node).textContent = lines.join("\n");  // keyboard and screen readers
    node.addEventListener("mouseenter", function (ev) { showTip(ev, lines); });
    node.addEventListener("mousemove", function (ev) { showTip(ev, lines); });
    node.addEventListener("mouseleave", hideTip);
  }

  function frame(lo, hi, label) {  // an svg with y grid, axes and a y scale over [lo, hi]
    var iw = W - M.left - M.right, ih = H - M.top - M.bottom;
    var y = function (v) { return M.top + ih - ((v - lo) / (hi - lo)) * ih; };
    var svg = el("svg", { viewBox: "0 0 " + W + " " + H, width: "100%", role: "img", "aria-label": label });
    niceTicks(lo, hi, 5).forEach(function (t) {
      el("line", { x1: M.left, x2: M.left + iw, y1: y(t), y2: y(t), "class": "grid" }, svg);
      el("text", { x: M.left - 6, y: y(t) + 4, "text-anchor": "end", "class": "tick" }, svg).textContent = fmt(t);
    });
    el("line", { x1: M.left, x2: M.left, y1: M.top, y2: M.top + ih, "class": "axis" }, svg);
    el("line", { x1: M.left, x2: M.left + iw, y1: M.top + ih, y2: M.top + ih, "class": "axis" }, svg);
    return { svg: svg, y: y, iw: iw, ih: ih };
  }

  function range(vals) {
    var lo = Math.min.apply(null, vals), hi = Math.max.apply(null, vals);
    var pad = (hi - lo) * 0.08 || Math.abs(hi) * 0.05 || 1;
    return [lo - pad, hi + pad];
  }

  // ------------------------------------------------------------------------------------------- trends
  function drawTrend(body, data, root) {
    var pts = data.points || [];
    body.textContent = "";
    if (!pts.length) {
      body.textContent = "No finished runs recorded for this series yet.";
      return;
    }
    var band = data.band || [null, null];
    var vals = pts.map(function (p) { return p.value; });
    [data.baseline, data.threshold, band[0], band[1]].forEach(function (v) {
      if (v !== null && v !== undefined && isFinite(v)) vals.push(v);
    });
    var lh = range(vals), lo = lh[0], hi = lh[1];
    var f = frame(lo, hi, data.metric + " trend of " + data.series_key), svg = f.svg, y = f.y, iw = f.iw;
    svg.setAttribute("class", "trend");
    svg.setAttribute("data-metric", data.metric);
    var x = function (i) { return M.left + (pts.length === 1 ? iw / 2 : (i * iw) / (pts.length - 1)); };

    if ((band[0] !== null && band[0] !== undefined) || (band[1] !== null && band[1] !== undefined)) {
      var top = band[1] === null || band[1] === undefined ? hi : Math.min(band[1], hi);
      var bot = band[0] === null || band[0] === undefined ? lo : Math.max(band[0], lo);
      svg.insertBefore(el("rect", { x: M.left, y: y(top), width: iw, height: Math.max(0, y(bot) - y(top)), "class": "band" }),
        svg.firstChild);
    }
    // x labels: date and time (UTC) of the first, middle and last points, two lines each
    var labelIdx = pts.length > 2 ? [0, Math.floor((pts.length - 1) / 2), pts.length - 1] : pts.map(function (_, i) { return i; });
    labelIdx.forEach(function (i) {
      var anchor = pts.length > 1 && i === 0 ? "start" : pts.length > 1 && i === pts.length - 1 ? "end" : "middle";
      var t = when(pts[i].started_at);
      el("text", { x: x(i), y: H - 22, "text-anchor": anchor, "class": "tick" }, svg).textContent = t.slice(0, 10);
      el("text", { x: x(i), y: H - 10, "text-anchor": anchor, "class": "tick" }, svg).textContent = t.slice(11) + " UTC";
    });
    if (data.baseline !== null && data.baseline !== undefined) {
      el("line", { x1: M.left, x2: M.left + iw, y1: y(data.baseline), y2: y(data.baseline), "class": "baseline" }, svg);
      el("text", { x: M.left + iw - 2, y: y(data.baseline) - 4, "text-anchor": "end", "class": "note" }, svg)
        .textContent = "baseline " + fmt(data.baseline) + " (" + data.method + ")";
    }
    if (data.threshold !== null && data.threshold !== undefined) {
      el("line", { x1: M.left, x2: M.left + iw, y1: y(data.threshold), y2: y(data.threshold), "class": "threshold" }, svg);
    }
    el("polyline", { points: pts.map(function (p, i) { return x(i) + "," + y(p.value); }).join(" "), "class": "line" }, svg);
    // accepted baselines (solid) and change points (dashed, drawn on top): vertical markers at their run (issue 12)
    var at = {};
    pts.forEach(function (p, i) { at[p.run_key] = i; });
    function vmark(runKey, cls, lines) {
      if (at[runKey] === undefined) return;
      var mx = x(at[runKey]);
      withTip(el("line", { x1: mx, x2: mx, y1: y(hi), y2: y(lo), "class": cls }, svg), lines);
    }
    (data.baselines || []).forEach(function (b) {
      vmark(b.run_key, "baseline-start", ["baseline restarted at " + b.run_key,
        "accepted " + when(b.accepted_at) + " UTC" + (b.accepted_by ? " by " + b.accepted_by : "")]);
    });
    (data.change_points || []).forEach(function (c) {
      vmark(c.run_key, "change-point", ["change point at " + c.run_key, fmt(c.level_before) + " → " + fmt(c.level_after) +
        " " + data.unit + (c.rel_change === null ? "" : " (" + (c.rel_change * 100).toFixed(1) + " %)") +
        (c.p_value === null ? "" : ", p " + c.p_value.toPrecision(2)), c.accepted ? "accepted" : "open"]);
    });
    var alerted = {};
    (data.alerts || []).forEach(function (a) { (alerted[a.run_key] = alerted[a.run_key] || []).push(a); });
    pts.forEach(function (p, i) {
      var run = p.airflow_run ? p.airflow_run.run_id : p.run_key;
      var lines = [run, when(p.started_at) + " UTC", fmt(p.value) + " " + data.unit + " · " + p.status +
        (p.good ? "" : " (not in the baseline)") + (p.simulated ? " · simulated (test double)" : "")];
      (alerted[p.run_key] || []).forEach(function (a) { lines.push("alert: " + a.message); });
      var link = el("a", { href: root + "/" + p.report_path, "class": "point-link" }, svg);
      var g = el("g", { "class": "point" + (p.good ? "" : " not-good") }, link);
      el("circle", { cx: x(i), cy: y(p.value), r: 4 }, g);
      el("circle", { cx: x(i), cy: y(p.value), r: 10, "class": "hit", style: "fill: transparent; stroke: none" }, g);  // an easier hover target
      withTip(g, lines);
      if (alerted[p.run_key]) {
        var cx = x(i), cy = y(p.value) - 10;
        var m = el("path", { d: "M" + cx + "," + (cy - 6) + " L" + (cx + 6) + "," + (cy + 5) + " L" + (cx - 6) + "," + (cy + 5) + " Z",
          "class": "alert-marker" }, svg);
        withTip(m, lines);
      }
    });
    body.appendChild(svg);
    var note = document.createElement("p");
    note.className = "chart-note";
    note.textContent = pts.length + " point(s), last " + fmt(pts[pts.length - 1].value) + " " + data.unit +
      (data.threshold !== null && data.threshold !== undefined ? ", alert beyond " + fmt(data.threshold) : ", no alert threshold yet");
    body.appendChild(note);
  }

  function loadTrend(fig, root) {
    var body = fig.querySelector(".chart-body");
    var q = new URLSearchParams({ metric: fig.dataset.metric, target: fig.dataset.target,
      batch_size: fig.dataset.batchSize, precision: fig.dataset.precision });
    if (fig.dataset.deviceKind && fig.dataset.metric.indexOf("rank") !== 0 && fig.dataset.metric !== "mAP") {
      q.set("device_kind", fig.dataset.deviceKind);
    }
    fetch(root + "/api/series?" + q.toString(), { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) {
        return r.json().then(function (j) {
          if (!r.ok) throw new Error(typeof j.detail === "string" ? j.detail : JSON.stringify(j.detail));
          return j;
        });
      })
      .then(function (data) { drawTrend(body, data, root); })
      .catch(function (e) { body.textContent = "Cannot load the series: " + e.message; body.className += " error"; });
  }

  // ------------------------------------------------------------------------------- by batch size
  // series: [{name, field, cls}] drawn over rows (one per batch size, ascending)
  function drawByBatch(parent, rows, title, unit, series) {
    var vals = [];
    series.forEach(function (s) {
      rows.forEach(function (r) { if (r[s.field] !== null && r[s.field] !== undefined) vals.push(r[s.field]); });
    });
    var wrap = document.createElement("div");
    wrap.className = "batch-chart-one";
    var cap = document.createElement("div");
    cap.className = "caption";
    cap.textContent = title + " (" + unit + ")";
    wrap.appendChild(cap);
    parent.appendChild(wrap);
    if (!vals.length) {
      wrap.appendChild(document.createTextNode("not measured"));
      return;
    }
    var lh = range(vals.concat([0]));
    var f = frame(Math.max(0, lh[0]), lh[1], title + " by batch size"), svg = f.svg, y = f.y, iw = f.iw;
    svg.setAttribute("class", "by-batch");
    var x = function (i) { return M.left + (rows.length === 1 ? iw / 2 : 12 + (i * (iw - 24)) / (rows.length - 1)); };
    rows.forEach(function (r, i) {
      el("text", { x: x(i), y: H - 16, "text-anchor": "middle", "class": "tick" }, svg).textContent = "bs" + r.batch_size;
    });
    el("text", { x: M.left + iw / 2, y: H - 2, "text-anchor": "middle", "class": "tick" }, svg).textContent = "batch size";
    series.forEach(function (s) {
      var have = rows.map(function (r, i) { return [i, r[s.field]]; })
        .filter(function (p) { return p[1] !== null && p[1] !== undefined; });
      if (have.length > 1 && s.cls !== "reference") {
        el("polyline", { points: have.map(function (p) { return x(p[0]) + "," + y(p[1]); }).join(" "), "class": "line " + s.cls }, svg);
      }
      have.forEach(function (p) {
        var r = rows[p[0]];
        var g = el("g", { "class": "point " + s.cls }, svg);
        if (s.cls === "reference") {
          var cx = x(p[0]), cy = y(p[1]);
          el("path", { d: "M" + cx + "," + (cy - 6) + " L" + (cx + 6) + "," + cy + " L" + cx + "," + (cy + 6) + " L" + (cx - 6) + "," + cy + " Z" }, g);
        } else {
          el("circle", { cx: x(p[0]), cy: y(p[1]), r: 4 }, g);
        }
        el("circle", { cx: x(p[0]), cy: y(p[1]), r: 10, "class": "hit", style: "fill: transparent; stroke: none" }, g);
        withTip(g, [s.name + ", batch " + r.batch_size, fmt(p[1]) + " " + unit]);
      });
    });
    var legend = document.createElement("p");
    legend.className = "legend";
    series.forEach(function (s) {
      var sw = document.createElement("span");
      sw.className = "swatch " + s.cls;
      legend.appendChild(sw);
      legend.appendChild(document.createTextNode(s.name));
    });
    wrap.appendChild(svg);
    wrap.appendChild(legend);
  }

  function drawBatchFigure(fig) {
    var rows = JSON.parse(fig.dataset.rows || "[]");
    var body = fig.querySelector(".chart-body");
    body.textContent = "";
    var tp = [{ name: "throughput (best)", field: "throughput_best", cls: "measured" }];
    if (rows.some(function (r) { return r.card_throughput !== null && r.card_throughput !== undefined; })) {
      tp.push({ name: "card throughput", field: "card_throughput", cls: "card" });
    }
    if (fig.dataset.hasReference === "yes") tp.push({ name: "seed reference (card)", field: "reference", cls: "reference" });
    drawByBatch(body, rows, "Throughput", "samples/s", tp);
    drawByBatch(body, rows, "Latency p99", "ms", [{ name: "p99 latency per batch", field: "latency_p99_ms", cls: "latency" }]);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var root = document.body.dataset.root || "";
    Array.prototype.forEach.call(document.querySelectorAll("figure.chart"), function (fig) { loadTrend(fig, root); });
    Array.prototype.forEach.call(document.querySelectorAll("figure.batch-chart"), drawBatchFigure);
  });
})();
