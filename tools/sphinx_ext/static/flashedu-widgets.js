// Loaded right before require.js and the ipywidgets embed manager, on pages with widgets only
// (first entry of nb_ipywidgets_js in _config.yml). Three fixes, all local:
(function () {
  var here = document.currentScript.src; // .../_static/flashedu-widgets.js
  var assets = new URL("jupyter-widgets/", here).href;

  // 1. Fonts. The manager's AMD modules resolve their fontawesome files against the module URL
  //    require.js gives them (by default "<page dir>/@jupyter-widgets/..."): map those names to the
  //    vendored folder. A global `require` object set before require.js loads is its config.
  window.require = {paths: {"@jupyter-widgets": assets.slice(0, -1),
                            "@jupyter-widgets/html-manager/dist": assets.slice(0, -1)}};
  window.__jupyter_widgets_assets_path__ = assets;

  // 2. Third-party widget modules (none are vendored): on a miss the manager fetches them from
  //    the URL in any <script data-jupyter-widgets-cdn="...">, jsDelivr when there is none. Point
  //    it here, so a missing module is a local 404, never a request leaving the site.
  document.currentScript.setAttribute("data-jupyter-widgets-cdn", assets + "modules/");

  // 3. Math. The manager typesets with MathJax 2's MathJax.Hub.Queue(["Typeset", Hub, el]); the
  //    book loads MathJax 3, which has no Hub, so every widget with math threw a TypeError. Give
  //    it that one call, on the config object there is now (MathJax 3 may not have loaded yet:
  //    queue) and again on the object MathJax 3 replaces it with when it starts.
  var pending = [];
  var hub = {Queue: function (cmd) {
    if (window.MathJax && MathJax.typesetPromise) MathJax.typesetPromise([cmd[2]]);
    else pending.push(cmd[2]);
  }};
  var config = window.MathJax = window.MathJax || {};
  config.Hub = hub;
  config.startup = config.startup || {};
  var ready = config.startup.ready;
  config.startup.ready = function () {
    if (ready) ready(); else MathJax.startup.defaultReady();
    MathJax.Hub = hub;
    MathJax.startup.promise.then(function () { return MathJax.typesetPromise(pending.splice(0)); });
  };
})();
