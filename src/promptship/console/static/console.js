// promptship console: live updates. A page with an element carrying data-events and
// data-fragment listens to the server's event stream and, when something it shows changes,
// fetches its fragment again and swaps it in. No build step, no inline script (the CSP).
(function () {
  "use strict";

  var RETRY_CLOSED_MS = 30000; // a stream the server refused (503, 401): try again after this

  function start() {
    var root = document.querySelector("[data-events][data-fragment]");
    if (!root || !window.EventSource || !window.fetch) {
      return;
    }
    var status = document.getElementById("live");
    var fetching = false;
    var again = false;

    function say(state, text) {
      document.documentElement.setAttribute("data-live", state);
      if (status) {
        status.textContent = text;
        status.hidden = false;
        status.className = "live live-" + state;
      }
    }

    function refresh() {
      if (fetching) {
        again = true; // one more fetch once this one is in
        return;
      }
      fetching = true;
      again = false;
      fetch(root.getAttribute("data-fragment"), {
        credentials: "same-origin",
        headers: { Accept: "text/html" },
        cache: "no-store",
      })
        .then(function (response) {
          if (response.status === 401) {
            say("signed-out", "Signed out: reload the page to sign in again.");
            return null;
          }
          if (!response.ok) {
            throw new Error("the overview answered " + response.status);
          }
          return response.text();
        })
        .then(function (html) {
          if (html !== null) {
            root.innerHTML = html;
            root.setAttribute("data-updated", String(Date.now()));
          }
        })
        .catch(function () {
          say("stale", "Could not refresh: what is shown may be out of date.");
        })
        .then(function () {
          fetching = false;
          if (again) {
            refresh();
          }
        });
    }

    var source = null;
    var opened = false;

    function connect() {
      source = new EventSource(root.getAttribute("data-events"));
      source.addEventListener("open", function () {
        if (opened) {
          refresh(); // back after a break: something may have changed meanwhile
        }
        opened = true;
        say("on", "Live: this page updates as deployments and requests change.");
      });
      source.addEventListener("change", refresh);
      source.addEventListener("signed-out", function () {
        source.close();
        say("signed-out", "Signed out: reload the page to sign in again.");
      });
      source.addEventListener("error", function () {
        if (source.readyState === EventSource.CLOSED) {
          say("off", "Live updates are paused; retrying shortly.");
          window.setTimeout(connect, RETRY_CLOSED_MS);
        } else {
          say("reconnecting", "Reconnecting…");
        }
      });
    }

    connect();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
