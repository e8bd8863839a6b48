/* Acknowledge buttons of the alerts page: POST <root>/api/alerts/<id>/ack with the session cookie and
 * the X-Requested-With header the API requires for cookie-authenticated changes. */
(function () {
  "use strict";
  document.addEventListener("DOMContentLoaded", function () {
    var root = document.body.dataset.root || "";
    var msg = document.getElementById("ack-message");
    function say(text, isError) {
      msg.hidden = false;
      msg.textContent = text;
      msg.className = "message" + (isError ? " error" : "");
    }
    Array.prototype.forEach.call(document.querySelectorAll("button.ack"), function (btn) {
      btn.addEventListener("click", function () {
        btn.disabled = true;
        fetch(root + "/api/alerts/" + encodeURIComponent(btn.dataset.alertId) + "/ack", {
          method: "POST", credentials: "same-origin",
          headers: { "X-Requested-With": "XMLHttpRequest", Accept: "application/json" }
        }).then(function (r) {
          return r.json().then(function (j) {
            if (!r.ok) throw new Error(j.detail || r.statusText);
            return j.alert;
          });
        }).then(function (alert) {
          var row = btn.closest("tr");
          row.className = "acked";
          btn.replaceWith(document.createTextNode("acknowledged by " + (alert.acknowledged_by || "you")));
          say("Alert " + alert.id + " acknowledged.", false);
        }).catch(function (e) {
          btn.disabled = false;
          say("Could not acknowledge: " + e.message, true);
        });
      });
    });
  });
})();
