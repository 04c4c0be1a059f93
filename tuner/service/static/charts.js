// SVG charts for the tuner UI, written here (no CDN, no dependency): a scatter plot (Pareto front) and a heat map.
"use strict";
const SVGNS = "http://www.w3.org/2000/svg";

function svgEl(tag, attrs, text) {
  const el = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

function niceTicks(lo, hi, n) {
  if (!(hi > lo)) { hi = lo + 1; }
  const step = Math.pow(10, Math.floor(Math.log10((hi - lo) / n)));
  const err = (hi - lo) / n / step;
  const mult = err >= 7.5 ? 10 : err >= 3.5 ? 5 : err >= 1.5 ? 2 : 1;
  const s = step * mult, out = [];
  for (let v = Math.ceil(lo / s) * s; v <= hi + 1e-9; v += s) out.push(+v.toPrecision(12));
  return out;
}

// points: [{x, y, cls, title}]; opts: {xLabel, yLabel, xLine, width, height, id}
function scatterChart(points, opts) {
  const W = opts.width || 720, H = opts.height || 420, m = {l: 70, r: 20, t: 20, b: 50};
  const svg = svgEl("svg", {width: W, height: H, viewBox: `0 0 ${W} ${H}`, class: "chart", id: opts.id || ""});
  const xs = points.map(p => p.x).concat(opts.xLine ? [opts.xLine] : []), ys = points.map(p => p.y);
  const x0 = 0, x1 = Math.max(...xs, 1e-9) * 1.08, y0 = 0, y1 = Math.max(...ys, 1e-9) * 1.08;
  const sx = v => m.l + (v - x0) / (x1 - x0) * (W - m.l - m.r);
  const sy = v => H - m.b - (v - y0) / (y1 - y0) * (H - m.t - m.b);
  for (const t of niceTicks(x0, x1, 6)) {
    svg.appendChild(svgEl("line", {x1: sx(t), x2: sx(t), y1: m.t, y2: H - m.b, stroke: "#eef0f3"}));
    svg.appendChild(svgEl("text", {x: sx(t), y: H - m.b + 16, "text-anchor": "middle", "font-size": 11}, String(t)));
  }
  for (const t of niceTicks(y0, y1, 6)) {
    svg.appendChild(svgEl("line", {x1: m.l, x2: W - m.r, y1: sy(t), y2: sy(t), stroke: "#eef0f3"}));
    svg.appendChild(svgEl("text", {x: m.l - 6, y: sy(t) + 4, "text-anchor": "end", "font-size": 11}, String(t)));
  }
  svg.appendChild(svgEl("text", {x: (W + m.l) / 2, y: H - 10, "text-anchor": "middle", "font-size": 12}, opts.xLabel));
  svg.appendChild(svgEl("text", {x: 14, y: (H - m.b) / 2, "font-size": 12, transform: `rotate(-90 14 ${(H - m.b) / 2})`,
    "text-anchor": "middle"}, opts.yLabel));
  if (opts.xLine) {
    svg.appendChild(svgEl("line", {x1: sx(opts.xLine), x2: sx(opts.xLine), y1: m.t, y2: H - m.b, stroke: "#b91c1c",
      "stroke-dasharray": "4 3"}));
    svg.appendChild(svgEl("text", {x: sx(opts.xLine) + 4, y: m.t + 12, "font-size": 11, fill: "#b91c1c"}, "SLO"));
  }
  const front = points.filter(p => p.front).sort((a, b) => a.x - b.x);
  if (front.length > 1) {
    svg.appendChild(svgEl("polyline", {points: front.map(p => `${sx(p.x)},${sy(p.y)}`).join(" "), fill: "none",
      stroke: "#2563eb", "stroke-width": 1.5}));
  }
  for (const p of points) {
    const c = svgEl("circle", {cx: sx(p.x), cy: sy(p.y), r: p.front ? 5 : 3.5, class: "point " + (p.cls || ""),
      fill: p.baseline ? "#f59e0b" : p.front ? "#2563eb" : p.ok ? "#94a3b8" : "#fca5a5", stroke: "#1f2937",
      "stroke-width": p.front ? 1 : 0.3});
    c.appendChild(svgEl("title", {}, p.title));
    svg.appendChild(c);
  }
  return svg;
}

// grid[i][j]: value of row i at column j (null: none); rows, cols: labels. Colour: value / best of its column.
function heatMap(grid, rows, cols, best, opts) {
  const cw = Math.max(26, Math.min(48, 900 / Math.max(cols.length, 1))), ch = 16, left = 330, top = 40;
  const W = left + cw * cols.length + 20, H = top + ch * rows.length + 30;
  const svg = svgEl("svg", {width: W, height: H, viewBox: `0 0 ${W} ${H}`, class: "chart", id: opts.id || ""});
  svg.appendChild(svgEl("text", {x: left, y: 14, "font-size": 12}, opts.title || ""));
  cols.forEach((c, j) => svg.appendChild(svgEl("text", {x: left + j * cw + cw / 2, y: top - 6, "font-size": 10,
    "text-anchor": "middle"}, String(c))));
  rows.forEach((r, i) => {
    svg.appendChild(svgEl("text", {x: left - 6, y: top + i * ch + 12, "font-size": 10, "text-anchor": "end"},
      r.length > 52 ? r.slice(0, 50) + "…" : r));
    cols.forEach((c, j) => {
      const v = grid[i][j];
      let fill = "#f3f4f6", label = "not measured";
      if (v !== null && v !== undefined && best[j]) {
        const rel = v / best[j];  // 1 = the best at this batch size
        const t = Math.min(1, (rel - 1) / 0.5);
        fill = `rgb(${Math.round(34 + t * 200)},${Math.round(197 - t * 140)},${Math.round(94 - t * 40)})`;
        label = `${v.toFixed(2)} us (${rel.toFixed(3)}x the best)`;
      }
      const rect = svgEl("rect", {x: left + j * cw, y: top + i * ch, width: cw - 1, height: ch - 1, fill, class: "cell"});
      rect.appendChild(svgEl("title", {}, `${r} @ M=${c}: ${label}`));
      svg.appendChild(rect);
    });
  });
  return svg;
}

// bars: [{label, values: [{name, value, colour}]}]: grouped bars of speed-ups with a line at 1.0.
function speedupBars(bars, opts) {
  const bw = 14, gap = 10, n = bars.length ? bars[0].values.length : 1, left = 50, top = 20, h = 200;
  const W = left + bars.length * (n * bw + gap) + 20, H = top + h + 40;
  const svg = svgEl("svg", {width: W, height: H, viewBox: `0 0 ${W} ${H}`, class: "chart", id: opts.id || ""});
  const vmax = Math.max(1.2, ...bars.flatMap(b => b.values.map(v => v.value || 0))) * 1.05;
  const sy = v => top + h - v / vmax * h;
  for (const t of niceTicks(0, vmax, 5)) {
    svg.appendChild(svgEl("text", {x: left - 6, y: sy(t) + 4, "font-size": 10, "text-anchor": "end"}, t + "x"));
  }
  svg.appendChild(svgEl("line", {x1: left, x2: W - 10, y1: sy(1), y2: sy(1), stroke: "#111827", "stroke-dasharray": "3 3"}));
  bars.forEach((b, i) => {
    const x = left + i * (n * bw + gap);
    b.values.forEach((v, k) => {
      if (v.value === null || v.value === undefined) return;
      const r = svgEl("rect", {x: x + k * bw, y: sy(v.value), width: bw - 2, height: sy(0) - sy(v.value), fill: v.colour});
      r.appendChild(svgEl("title", {}, `M=${b.label} ${v.name}: ${v.value.toFixed(3)}x`));
      svg.appendChild(r);
    });
    svg.appendChild(svgEl("text", {x: x + n * bw / 2, y: top + h + 14, "font-size": 10, "text-anchor": "middle"}, b.label));
  });
  svg.appendChild(svgEl("text", {x: left, y: H - 6, "font-size": 11}, opts.legend || ""));
  return svg;
}
