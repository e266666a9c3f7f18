// mwai dashboard: live updates over Server-Sent Events. The page is complete
// without this file; it only swaps in the fragment the server renders when the
// data changes. No inline script anywhere (Content-Security-Policy: script-src 'self').
(function () {
  "use strict";
  var region = document.querySelector("[data-live]");
  var state = document.getElementById("live-state");
  if (!region || !window.EventSource) {
    return;
  }
  function say(text) {
    if (state) {
      state.textContent = text;
    }
  }
  var source = new EventSource(region.getAttribute("data-live"));
  source.addEventListener("open", function () {
    say("Live updates: on.");
  });
  source.addEventListener("error", function () {
    say("Live updates: reconnecting…");
  });
  source.addEventListener("update", function (event) {
    // Keep the keyboard where it was: the element with the same id gets the focus back.
    var focused = document.activeElement && region.contains(document.activeElement)
      ? document.activeElement.id : "";
    var template = document.createElement("template");
    template.innerHTML = event.data;
    region.replaceChildren(template.content);
    if (focused) {
      var again = document.getElementById(focused);
      if (again) {
        again.focus();
      }
    }
    say("Live updates: on, last change " + new Date().toLocaleTimeString() + ".");
  });
  window.addEventListener("pagehide", function () {
    source.close();
  });
})();
