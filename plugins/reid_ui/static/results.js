/* Results table: the ▸ button of a row shows / hides the row's detail (the columns not in the table). */
(function () {
  "use strict";
  document.addEventListener("DOMContentLoaded", function () {
    Array.prototype.forEach.call(document.querySelectorAll("table#results button.toggle"), function (btn) {
      btn.addEventListener("click", function () {
        var detail = document.getElementById(btn.getAttribute("aria-controls"));
        var open = btn.getAttribute("aria-expanded") !== "true";
        detail.hidden = !open;
        btn.setAttribute("aria-expanded", open ? "true" : "false");
        btn.textContent = open ? "▾" : "▸";
      });
    });
  });
})();
