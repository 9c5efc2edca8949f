// What-if studies: run one (operators), follow it, show its table and series; stored ones.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const KPIS = ["pue", "facility_energy_mwh", "peak_facility_mw", "max_gpu_temp_c",
    "max_supply_c", "throttled_gpu_hours", "cost_usd"];
  const progress = document.getElementById("progress");
  window.consolePlot = null;

  function show(study) {
    document.getElementById("study-title").textContent =
      `${study.name} (${study.study_id}): ${study.state}` + (study.error ? ` – ${study.error}` : "");
    const el = document.getElementById("results");
    const head = document.createElement("tr");
    for (const h of ["variant", "passed", ...KPIS.map((k) =>
      `${k}${study.kpi_units[k] ? " (" + study.kpi_units[k] + ")" : ""}`)]) {
      const th = document.createElement("th");
      th.textContent = h;
      head.append(th);
    }
    el.replaceChildren(head, ...study.variants.map((v) => {
      const tr = document.createElement("tr");
      tr.className = "variant";
      const cells = [v.name, v.passed ? "yes" : "no", ...KPIS.map((k) =>
        Console.fixed(v.kpis[k], 3) + (v.name !== "base" && v.deltas[k] !== undefined
          ? ` (${v.deltas[k] >= 0 ? "+" : ""}${Console.fixed(v.deltas[k], 3)})` : ""))];
      for (const c of cells) {
        const td = document.createElement("td");
        td.textContent = c;
        tr.append(td);
      }
      return tr;
    }));
    const first = study.variants[0];
    const name = first && Object.keys(first.series)[0];
    if (name) {
      const n = first.series[name].length;
      const step = study.duration_s / Math.max(n, 1) / 3600;
      const x = Array.from({ length: n }, (_, i) => i * step);
      window.consolePlot = Console.chart(document.getElementById("chart"), name,
        study.variants.map((v) => v.name), [x, ...study.variants.map((v) => v.series[name])]);
    }
  }

  async function follow(id) {
    for (;;) {
      const study = await Console.api(`/api/whatif/studies/${id}`);
      if (study.state !== "running") {
        progress.textContent = "";
        show(study);
        listStudies();
        return;
      }
      const p = study.progress;
      progress.textContent = p ? `running: ${Console.fixed(p.variants_done, 1)} of ` +
        `${p.variants_total} variants` : "running";
      await new Promise((r) => setTimeout(r, 1000));
    }
  }

  async function listStudies() {
    const studies = await Console.api("/api/whatif/studies");
    document.getElementById("studies").replaceChildren(...studies.map((s) => {
      const li = document.createElement("li");
      const a = document.createElement("a");
      a.href = "#";
      a.textContent = `${s.name} · ${s.variants} variants · ${s.state}`;
      a.addEventListener("click", (e) => {
        e.preventDefault();
        Console.act(Console.api(`/api/whatif/studies/${s.study_id}`), show);
      });
      li.append(a);
      return li;
    }));
  }

  document.getElementById("study-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const f = e.target;
    const body = {};
    for (const key of ["name", "scenario", "duration", "dt", "record_every", "series_every",
      "variants", "grid"]) body[key] = f[key].value;
    body.series = f.series.value;
    Console.act(Console.api("/api/whatif/studies", { body }), (accepted) => {
      progress.textContent = `study ${accepted.study_id}: ${accepted.variants} variants queued`;
      follow(accepted.study_id);
    });
  });
  Console.act(listStudies());
});
