/* Trend charts of the ReID validation plugin: one SVG per <figure class="chart">, drawn from
 * GET <root>/api/series. Plain DOM + SVG, no library (the UI must work air-gapped). */
(function () {
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";
  var W = 400, H = 220, M = { top: 14, right: 16, bottom: 34, left: 58 };

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

  function niceTicks(lo, hi, n) {
    var span = hi - lo, step = Math.pow(10, Math.floor(Math.log10(span / n)));
    [1, 2, 5, 10].some(function (m) { if (span / (step * m) <= n) { step *= m; return true; } return false; });
    var out = [];
    for (var t = Math.ceil(lo / step) * step; t <= hi + 1e-9; t += step) out.push(t);
    return out;
  }

  function draw(body, data) {
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
    var lo = Math.min.apply(null, vals), hi = Math.max.apply(null, vals);
    var pad = (hi - lo) * 0.08 || Math.abs(hi) * 0.05 || 1;
    lo -= pad; hi += pad;
    var iw = W - M.left - M.right, ih = H - M.top - M.bottom;
    var x = function (i) { return M.left + (pts.length === 1 ? iw / 2 : (i * iw) / (pts.length - 1)); };
    var y = function (v) { return M.top + ih - ((v - lo) / (hi - lo)) * ih; };

    var svg = el("svg", { viewBox: "0 0 " + W + " " + H, width: "100%", role: "img",
      "class": "trend", "data-metric": data.metric, "aria-label": data.metric + " trend of " + data.series_key });

    // no-alert band
    if ((band[0] !== null && band[0] !== undefined) || (band[1] !== null && band[1] !== undefined)) {
      var top = band[1] === null || band[1] === undefined ? hi : Math.min(band[1], hi);
      var bot = band[0] === null || band[0] === undefined ? lo : Math.max(band[0], lo);
      el("rect", { x: M.left, y: y(top), width: iw, height: Math.max(0, y(bot) - y(top)), "class": "band" }, svg);
    }
    // axes and grid
    niceTicks(lo, hi, 5).forEach(function (t) {
      el("line", { x1: M.left, x2: M.left + iw, y1: y(t), y2: y(t), "class": "grid" }, svg);
      el("text", { x: M.left - 6, y: y(t) + 4, "text-anchor": "end", "class": "tick" }, svg).textContent = fmt(t);
    });
    el("line", { x1: M.left, x2: M.left, y1: M.top, y2: M.top + ih, "class": "axis" }, svg);
    el("line", { x1: M.left, x2: M.left + iw, y1: M.top + ih, y2: M.top + ih, "class": "axis" }, svg);
    var labelIdx = pts.length > 2 ? [0, Math.floor((pts.length - 1) / 2), pts.length - 1] : pts.map(function (_, i) { return i; });
    labelIdx.forEach(function (i) {
      var anchor = pts.length > 1 && i === 0 ? "start" : pts.length > 1 && i === pts.length - 1 ? "end" : "middle";
      el("text", { x: x(i), y: H - 12, "text-anchor": anchor, "class": "tick" }, svg)
        .textContent = String(pts[i].started_at).slice(0, 10);
    });
    // baseline and threshold
    if (data.baseline !== null && data.baseline !== undefined) {
      el("line", { x1: M.left, x2: M.left + iw, y1: y(data.baseline), y2: y(data.baseline), "class": "baseline" }, svg);
      el("text", { x: M.left + iw - 2, y: y(data.baseline) - 4, "text-anchor": "end", "class": "note" }, svg)
        .textContent = "baseline " + fmt(data.baseline) + " (" + data.method + ")";
    }
    if (data.threshold !== null && data.threshold !== undefined) {
      el("line", { x1: M.left, x2: M.left + iw, y1: y(data.threshold), y2: y(data.threshold), "class": "threshold" }, svg);
    }
    // the series
    el("polyline", { points: pts.map(function (p, i) { return x(i) + "," + y(p.value); }).join(" "), "class": "line" }, svg);
    var alerted = {};
    (data.alerts || []).forEach(function (a) { (alerted[a.run_key] = alerted[a.run_key] || []).push(a); });
    pts.forEach(function (p, i) {
      var g = el("g", { "class": "point" + (p.good ? "" : " not-good") }, svg);
      el("circle", { cx: x(i), cy: y(p.value), r: 3.5 }, g);
      el("title", {}, g).textContent = p.run_key + " — " + fmt(p.value) + " " + data.unit + " (" + p.status + ")";
      if (alerted[p.run_key]) {
        var cx = x(i), cy = y(p.value) - 10;
        var m = el("path", { d: "M" + cx + "," + (cy - 6) + " L" + (cx + 6) + "," + (cy + 5) + " L" + (cx - 6) + "," + (cy + 5) + " Z",
          "class": "alert-marker" }, svg);
        el("title", {}, m).textContent = alerted[p.run_key].map(function (a) { return a.message; }).join("\n");
      }
    });
    body.appendChild(svg);
    var note = document.createElement("p");
    note.className = "chart-note";
    note.textContent = pts.length + " point(s), last " + fmt(pts[pts.length - 1].value) + " " + data.unit +
      (data.threshold !== null && data.threshold !== undefined ? ", alert beyond " + fmt(data.threshold) : ", no alert threshold yet");
    body.appendChild(note);
  }

  function load(fig, root) {
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
      .then(function (data) { draw(body, data); })
      .catch(function (e) { body.textContent = "Cannot load the series: " + e.message; body.className += " error"; });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var root = document.body.dataset.root || "";
    Array.prototype.forEach.call(document.querySelectorAll("figure.chart"), function (fig) { load(fig, root); });
  });
})();
