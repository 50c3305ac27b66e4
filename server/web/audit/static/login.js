// The sandbox prints a sign-in link with the token after '#': a URL fragment never reaches the
// server (or its logs). Move it into the form, drop it from the address bar, and submit.
(function () {
  var match = /(?:^#|&)token=([^&]+)/.exec(window.location.hash);
  if (!match) { return; }
  var form = document.getElementById("login-form");
  var field = document.getElementById("token");
  history.replaceState(null, "", window.location.pathname + window.location.search);
  if (form && field) {
    field.value = decodeURIComponent(match[1]);
    form.submit();
  }
})();
