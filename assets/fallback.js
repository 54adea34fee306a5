/*! edgecache fallback.js: an asset that fails to load from an edge is loaded again from the origin.
 *
 * Include it first, as a classic script:
 *   <script src="/.edgecache/fallback.js" data-origin="http://127.0.0.1:8000"></script>
 * Optional attributes: data-edges="URL URL" (only these hosts count as edges; default: any
 * host but the origin's) and data-css-timeout="3000" (ms before a stylesheet that has not
 * loaded is fetched from the origin). Covers <img>, <script src>, <link rel=stylesheet>,
 * <video>/<audio>/<source>, and GET/HEAD fetch() calls (network error or 5xx). Each element is
 * reloaded at most once. What was reloaded: window.edgecacheFallback.reloaded.
 */
(function () {
  'use strict';
  var me = document.currentScript;
  function attr(name) { return me ? me.getAttribute(name) : null; }
  var origin = new URL(attr('data-origin') || location.origin, location.href);
  var originBase = origin.origin + origin.pathname.replace(/\/+$/, '');
  var edges = (attr('data-edges') || '').split(/[\s,]+/).filter(Boolean)
    .map(function (e) { return new URL(e, location.href).origin; });
  var cssTimeout = Number(attr('data-css-timeout')) || 3000;
  var MARK = 'data-edgecache-fallback';
  var state = window.edgecacheFallback = { origin: originBase, reloaded: [] };

  // The same path and query on the origin, or null when `url` is not an edge's.
  function originUrl(url) {
    var u;
    try { u = new URL(url, location.href); } catch (e) { return null; }
    if (!/^https?:$/.test(u.protocol) || u.origin === origin.origin) return null;
    if (edges.length && edges.indexOf(u.origin) < 0) return null;
    return originBase + u.pathname + u.search;
  }

  function note(kind, from, to) {
    state.reloaded.push({ kind: kind, from: from, to: to });
  }

  function reloadMedia(media) {
    if (!media || media.hasAttribute(MARK)) return;
    media.setAttribute(MARK, '1');
    var changed = false;
    var all = [media].concat(Array.prototype.slice.call(media.querySelectorAll('source')));
    all.forEach(function (m) {
      var from = m.getAttribute('src') ? m.src : null;
      var to = from && originUrl(from);
      if (to) { note(m.tagName.toLowerCase(), from, to); m.src = to; changed = true; }
    });
    // Changing a <source> does nothing until the element picks a source again.
    if (changed) media.load();
  }

  function reload(el) {
    if (!el || el.nodeType !== 1 || el.hasAttribute(MARK)) return;
    var tag = el.tagName, from, to;
    if (tag === 'VIDEO' || tag === 'AUDIO') return reloadMedia(el);
    if (tag === 'SOURCE') return reloadMedia(el.parentNode);
    if (tag === 'IMG') {
      from = el.currentSrc || el.src;
      if (!(to = originUrl(from))) return;
      el.setAttribute(MARK, '1');
      el.removeAttribute('srcset'); // srcset would win over src
      note('img', from, to);
      el.src = to;
    } else if (tag === 'SCRIPT' && el.src) {
      from = el.src;
      if (!(to = originUrl(from))) return;
      el.setAttribute(MARK, '1');
      // A script element runs once: a copy has to be inserted. async=false keeps the copies
      // in document order among themselves.
      var copy = document.createElement('script');
      for (var i = 0; i < el.attributes.length; i++) {
        copy.setAttribute(el.attributes[i].name, el.attributes[i].value);
      }
      copy.async = false;
      copy.src = to;
      note('script', from, to);
      el.parentNode.insertBefore(copy, el.nextSibling);
    } else if (tag === 'LINK' && /\bstylesheet\b/i.test(el.rel) && !/\balternate\b/i.test(el.rel)) {
      from = el.href;
      if (!(to = originUrl(from))) return;
      el.setAttribute(MARK, '1');
      note('stylesheet', from, to);
      el.href = to;
    }
  }

  // Resource errors do not bubble; a capturing listener on window still sees them.
  window.addEventListener('error', function (ev) {
    if (ev.target !== window) reload(ev.target);
  }, true);

  // A stylesheet that hangs never errors: still no sheet after the timeout means reload.
  function checkSheets() {
    var links = document.querySelectorAll('link[rel~="stylesheet" i]');
    for (var i = 0; i < links.length; i++) {
      if (!links[i].sheet && !links[i].disabled) reload(links[i]);
    }
  }
  setTimeout(checkSheets, cssTimeout);
  document.addEventListener('DOMContentLoaded', function () { setTimeout(checkSheets, cssTimeout); });

  var realFetch = window.fetch;
  if (realFetch) {
    window.fetch = function (input, init) {
      var req = input instanceof Request ? input : null;
      var url = req ? req.url : String(input);
      var method = ((init && init.method) || (req && req.method) || 'GET').toUpperCase();
      // Only safe methods: a POST that timed out may still have happened.
      var to = method === 'GET' || method === 'HEAD' ? originUrl(url) : null;
      var first = realFetch.call(window, input, init);
      if (!to) return first;
      function retry() {
        note('fetch', url, to);
        return realFetch.call(window, req ? new Request(to, req) : to, init);
      }
      return first.then(function (r) {
        return r.status >= 500 ? retry().catch(function () { return r; }) : r;
      }, function (err) {
        if (err && err.name === 'AbortError') throw err;
        return retry().catch(function () { throw err; });
      });
    };
  }
})();
