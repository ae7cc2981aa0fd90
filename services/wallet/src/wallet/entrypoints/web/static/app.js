// The wallet pages' behaviour: live updates from /events, the allocation chart, and in-place
// notices when a part cannot refresh. No inline scripts: the pages' CSP allows this origin only.
(function () {
  "use strict";

  // Same order as the .swatch-N classes of the table beside the chart.
  var COLOURS = ["#1f4fd1", "#f29f05", "#0f9d6b", "#8a4fd1", "#e0457b", "#98a2b3"];

  function drawCharts(root) {
    if (!window.Chart) return;
    // A part swapped out by htmx took its canvas with it: let go of that chart too.
    Object.values(window.Chart.instances).forEach(function (chart) {
      if (!chart.canvas || !chart.canvas.isConnected) chart.destroy();
    });
    root.querySelectorAll("canvas[data-chart='doughnut']").forEach(function (canvas) {
      var existing = window.Chart.getChart(canvas);
      if (existing) existing.destroy();
      var labels = JSON.parse(canvas.dataset.labels);
      var percentages = JSON.parse(canvas.dataset.percentages);
      var values = JSON.parse(canvas.dataset.values);
      var currency = canvas.dataset.currency;
      new window.Chart(canvas, {
        type: "doughnut",
        data: {
          labels: labels,
          datasets: [{
            data: values.map(Number),
            backgroundColor: COLOURS.slice(0, labels.length),
            borderWidth: 2,
            borderColor: "#ffffff"
          }]
        },
        options: {
          cutout: "62%",
          animation: false,
          maintainAspectRatio: true,
          plugins: {
            legend: { position: "bottom", labels: { boxWidth: 12, usePointStyle: true } },
            tooltip: {
              callbacks: {
                // The API's strings, not the float the chart draws with.
                label: function (item) {
                  return " " + labels[item.dataIndex] + ": " + values[item.dataIndex] + " " +
                    currency + " (" + percentages[item.dataIndex] + "%)";
                }
              }
            }
          }
        }
      });
    });
  }

  function setLive(text, on) {
    var status = document.getElementById("live-status");
    if (!status) return;
    status.textContent = text;
    status.classList.toggle("on", on);
  }

  function connect() {
    if (document.body.dataset.live !== "on" || !window.EventSource) return;
    var source = new EventSource("/events");
    source.addEventListener("ready", function () {
      setLive("Live", true);
      // The stream tells of changes after it opened: one that landed while the page loaded or
      // while the stream reconnected would never show. Every connect refreshes every part (each
      // listens to wallet-changed; prices-changed too would load some of them twice).
      window.htmx.trigger(document.body, "wallet-changed");
    });
    ["wallet-changed", "prices-changed"].forEach(function (name) {
      source.addEventListener(name, function () { window.htmx.trigger(document.body, name); });
    });
    source.addEventListener("signed-out", function () {
      setLive("Signed out", false);
      source.close();
    });
    // EventSource reconnects by itself; the figures shown stay, marked as not live meanwhile.
    source.onerror = function () { setLive("Reconnecting…", false); };
  }

  function partOf(event) {
    var elt = event.detail && event.detail.elt;
    return elt && elt.closest ? elt.closest(".part") : null;
  }

  function staleNotice(event) {
    var part = partOf(event);
    var status = part && part.querySelector(".part-status");
    if (status) {
      status.textContent = "Could not refresh just now; these figures may be out of date.";
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    // On a narrow screen the tab bar scrolls: keep the current page's tab in view.
    var current = document.querySelector(".tabs [aria-current='page']");
    if (current) current.scrollIntoView({ block: "nearest", inline: "center" });
    drawCharts(document);
    connect();
  });
  // Drawn as soon as the new part is in the page, in the same task as the swap: on settle (a
  // moment later) the browser had already painted the new canvas blank, a flicker on every update.
  document.addEventListener("htmx:afterSwap", function () { drawCharts(document); });
  document.addEventListener("htmx:responseError", staleNotice);
  document.addEventListener("htmx:sendError", staleNotice);
})();
