// The history browser: stored runs, one run's series, two runs compared, export.
"use strict";

document.addEventListener("DOMContentLoaded", async () => {
  const chartEl = document.getElementById("chart");
  const metricsEl = document.getElementById("metrics");
  const picked = (name) => document.querySelector(`input[name=${name}]:checked`)?.value;
  const chosen = () => [...metricsEl.selectedOptions].map((o) => o.value).join(",");
  const hours = (times) => times.map((t) => t / 3600);
  window.consolePlot = null;  // the chart drawn last (read by the browser tests)

  function table(rows) {
    const el = document.getElementById("summary");
    el.replaceChildren(...rows.map((cells, i) => {
      const tr = document.createElement("tr");
      tr.append(...cells.map((c) => {
        const td = document.createElement(i === 0 ? "th" : "td");
        td.textContent = typeof c === "number" ? Console.fixed(c, Math.abs(c) >= 100 ? 0 : 3) : c;
        return td;
      }));
      return tr;
    }));
  }

  const metrics = await Console.api("/api/history/metrics");
  for (const m of metrics) {
    const option = new Option(`${m.name} (${m.unit})`, m.name);
    option.selected = m.name === "facility_w";
    metricsEl.append(option);
  }
  const runs = await Console.api("/api/history/runs");
  document.querySelector("#runs tbody").replaceChildren(...runs.map((r, i) => {
    const tr = document.createElement("tr");
    tr.dataset.run = r.run_id;
    tr.innerHTML = `<td><input type="radio" name="a"></td><td><input type="radio" name="b"></td>`;
    tr.querySelector("[name=a]").value = r.run_id;
    tr.querySelector("[name=b]").value = r.run_id;
    tr.querySelector("[name=a]").checked = i === 1 || runs.length === 1;
    tr.querySelector("[name=b]").checked = i === 0;
    for (const text of [r.run_id, r.site_id, r.started_at.replace("T", " ").slice(0, 19),
      r.dt_s, r.steps_stored, r.status]) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.append(td);
    }
    return tr;
  }));

  const exportLink = document.getElementById("export");
  const updateExport = () => {
    exportLink.href = `/api/history/export?format=csv&run=${picked("a") || ""}&metrics=${chosen()}`;
  };
  document.getElementById("runs").addEventListener("change", updateExport);
  metricsEl.addEventListener("change", updateExport);
  updateExport();

  document.getElementById("show").addEventListener("click", () => Console.act(
    Console.api(`/api/history/query?run=${picked("a")}&metrics=${chosen()}` +
      `&bucket_s=${document.getElementById("bucket").value}`),
    (q) => {
      window.consolePlot = Console.chart(chartEl, `run ${picked("a")}`, q.metrics,
        [hours(q.time_s), ...q.values], "", q.metrics);
      table([["metric", "rows"], ...q.metrics.map((m) => [m, q.time_s.length])]);
    }));

  document.getElementById("compare").addEventListener("click", () => Console.act(
    Console.api(`/api/history/compare?a=${picked("a")}&b=${picked("b")}&metrics=${chosen()}` +
      `&bucket_s=${document.getElementById("bucket").value}`),
    (c) => {
      const names = c.metrics.flatMap((m) => [`${m} A`, `${m} B`]);
      const series = c.metrics.flatMap((m, i) => [c.series_a[i], c.series_b[i]]);
      window.consolePlot = Console.chart(chartEl, `${c.a.run_id} (A) and ${c.b.run_id} (B)`,
        names, [hours(c.time_s), ...series], "", c.metrics.flatMap((m) => [m, m]));
      table([["metric", "avg A", "avg B", "B − A", "max A", "max B"],
        ...c.metrics.map((m, i) => [m, c.a.metrics[i].avg, c.b.metrics[i].avg,
          c.deltas[i].avg, c.a.metrics[i].max, c.b.metrics[i].max])]);
    }));
});
