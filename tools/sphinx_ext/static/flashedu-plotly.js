// Put right after the shared plotly.js by flashedu_offline. plotly.js typesets LaTeX labels
// ("$\alpha$") only if MathJax is up when it draws, but it draws each figure while the page is
// parsed and the book's MathJax is deferred: redraw the figures with "$" once MathJax has started.
// (Pages without math in the prose load no MathJax; their figures' LaTeX stays raw.)
window.addEventListener("load", function () {
  if (!(window.MathJax && MathJax.startup && MathJax.startup.promise)) return;
  MathJax.startup.promise.then(function () {
    document.querySelectorAll(".js-plotly-plot").forEach(function (gd) {
      if (JSON.stringify([gd.layout, gd.data]).indexOf("$") >= 0) window.Plotly.redraw(gd);
    });
  });
});
