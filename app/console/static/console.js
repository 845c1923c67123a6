// Copy buttons: <button data-copy="element-id">. No external code, no inline script.
(function () {
  "use strict";
  function textOf(el) {
    return "value" in el && typeof el.value === "string" ? el.value : el.textContent;
  }
  function fallbackCopy(el, text) {
    var area = el;
    if (!("select" in el)) {
      area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.style.position = "absolute";
      area.style.left = "-9999px";
      document.body.appendChild(area);
    }
    area.select();
    var ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    if (area !== el) { document.body.removeChild(area); }
    return ok;
  }
  function done(button, ok) {
    var label = button.getAttribute("data-label") || button.textContent;
    button.setAttribute("data-label", label);
    button.textContent = ok ? "Copied" : "Press Ctrl+C";
    window.setTimeout(function () { button.textContent = label; }, 2000);
  }
  document.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-copy]");
    if (!button) { return; }
    var el = document.getElementById(button.getAttribute("data-copy"));
    if (!el) { return; }
    var text = textOf(el);
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(
        function () { done(button, true); },
        function () { done(button, fallbackCopy(el, text)); }
      );
    } else {
      done(button, fallbackCopy(el, text));
    }
  });
  // A shown secret is selected on focus, so keyboard users can copy it at once.
  document.addEventListener("focusin", function (event) {
    if (event.target.classList && event.target.classList.contains("secret")) {
      event.target.select();
    }
  });
})();
