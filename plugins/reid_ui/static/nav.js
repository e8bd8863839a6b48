/* Links to Airflow pages (a[data-airflow-nav]) from inside Airflow's own UI.
 *
 * Airflow 3 shows plugin pages in an iframe sandboxed with "allow-scripts allow-same-origin allow-forms
 * allow-downloads": no allow-top-navigation and no allow-popups, so target="_top" and target="_blank" links
 * are blocked there. The frame is same-origin, so the link is handed to Airflow's router instead, the way
 * the browser's back / forward buttons reach it: a history entry on the top window plus a popstate event.
 * Outside an iframe (the page opened at /reid/ directly) the plain link is followed. */
(function () {
  "use strict";

  function airflowWindow() {
    if (window.top === window) return null;
    try {
      return window.top.location.origin === window.location.origin ? window.top : null;
    } catch (e) {
      return null;  // another origin: leave the link to the browser
    }
  }

  document.addEventListener("click", function (ev) {
    var a = ev.target.closest ? ev.target.closest("a[data-airflow-nav]") : null;
    if (!a || ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey) return;
    var top = airflowWindow();
    if (!top) return;
    ev.preventDefault();
    var url = new URL(a.getAttribute("href"), window.location.href);
    var state = top.history.state || {};
    var idx = typeof state.idx === "number" ? state.idx + 1 : 0;  // React Router's entry index
    top.history.pushState({ usr: null, key: Math.random().toString(36).slice(2, 10), idx: idx }, "",
      url.pathname + url.search + url.hash);
    top.dispatchEvent(new top.PopStateEvent("popstate", { state: top.history.state }));
  });
})();
