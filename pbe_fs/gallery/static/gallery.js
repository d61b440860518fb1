// Keyboard navigation: left/right follow rel=prev/next, "/" focuses search.
// The gallery works without it.
document.addEventListener("keydown", function (e) {
  var t = e.target;
  if (e.altKey || e.ctrlKey || e.metaKey || (t && /^(INPUT|SELECT|TEXTAREA)$/.test(t.tagName))) return;
  var rel = e.key === "ArrowLeft" ? "prev" : e.key === "ArrowRight" ? "next" : null;
  if (rel) {
    var link = document.querySelector('a[rel="' + rel + '"]');
    if (link) { e.preventDefault(); location.href = link.href; }
  } else if (e.key === "/") {
    var box = document.querySelector('input[type="search"]');
    if (box) { e.preventDefault(); box.focus(); }
  }
});
