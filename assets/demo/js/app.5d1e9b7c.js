// edgecache demo script: shows which PoP answered this page's requests.
window.edgecacheDemo = { loaded: true };
document.addEventListener("DOMContentLoaded", async () => {
  const out = document.getElementById("status");
  out.dataset.styled = "";
  try {
    const r = await fetch(document.querySelector("link[rel=stylesheet]").href, { cache: "no-store" });
    out.textContent = "Cache-Status: " + (r.headers.get("cache-status") || "(none: served by the origin)");
  } catch (e) {
    out.textContent = "stylesheet check failed: " + e;
  }
});
