// The live site: power flow, cards, CDU heat map, trend and events from /api/live.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const KEEP = 300;  // updates in the trend
  const trend = [[], [], [], []];
  let plot = null;

  function color(t, lo, hi) {  // blue (cool) -> red (hot)
    const f = hi > lo ? Math.min(1, Math.max(0, (t - lo) / (hi - lo))) : 0.5;
    return `hsl(${Math.round(220 - 220 * f)}, 70%, 50%)`;
  }

  function heatmap(halls) {
    const el = document.getElementById("heatmap");
    const all = halls.flatMap((h) => h.tcs_supply_c).filter((t) => t !== null);
    const lo = Math.min(...all), hi = Math.max(...all);
    el.replaceChildren(...halls.map((hall) => {
      const row = document.createElement("div");
      row.className = "hall";
      const name = document.createElement("span");
      name.textContent = hall.name;
      row.append(name, ...hall.tcs_supply_c.map((t, i) => {
        const cell = document.createElement("span");
        cell.className = "cdu";
        cell.style.background = t === null ? "#ccc" : color(t, lo, hi);
        cell.title = `${hall.name} CDU ${i + 1}: ${Console.fixed(t, 2)} °C`;
        cell.textContent = Console.fixed(t, 1);
        return cell;
      }));
      return row;
    }));
  }

  function events(list) {
    document.getElementById("events").replaceChildren(...list.slice(0, 15).map((e) => {
      const li = document.createElement("li");
      li.textContent = `${new Date(e.at * 1000).toLocaleTimeString()} ${e.text}`;
      return li;
    }));
  }

  Console.live((s) => {
    heatmap(s.halls);
    events(s.events);
    if (s.time_s === null || !s.quantities.facility_w) return;
    trend[0].push(s.time_s / 3600);
    trend[1].push(s.quantities.facility_w / 1e6);
    trend[2].push(s.quantities.it_w / 1e6);
    trend[3].push(s.quantities.cooling_w / 1e6);
    for (const column of trend) if (column.length > KEEP) column.shift();
    if (plot === null) {
      plot = Console.chart(document.getElementById("trend"), "",
        ["facility", "IT", "cooling"], trend, "MW");
    } else {
      plot.setData(trend);
    }
  });
});
