// Run control: operator buttons over /api/run/<action>.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  Console.live();
  const run = (action, body) => Console.act(
    Console.api(`/api/run/${action}`, { body: body || {} }),
    (reply) => { if (reply.snapshot) Console.bind(reply.snapshot); });

  for (const button of document.querySelectorAll("button[data-action]")) {
    button.addEventListener("click", () => run(button.dataset.action));
  }
  document.getElementById("step-form").addEventListener("submit", (e) => {
    e.preventDefault();
    run("step", { ticks: e.target.ticks.value });
  });
  document.getElementById("speed-form").addEventListener("submit", (e) => {
    e.preventDefault();
    run("speed", { speed: e.target.speed.value });
  });
  document.getElementById("start-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const f = e.target;
    Console.say("starting: the domains build the site's model…");
    run("start", {
      scenario: f.scenario.value, scenario_yaml: f.scenario_yaml.value, dt_s: f.dt_s.value,
      horizon_s: f.horizon_s.value, speed: f.speed.value, paused: f.paused.checked,
    });
  });
});
