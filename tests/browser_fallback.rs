//! `assets/fallback.js` in headless Chromium: a page whose assets point at a dead (and a
//! hanging) edge still gets every asset, from the origin. Skipped when Chromium is missing.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::Request;
use axum::response::Response;
use tokio::net::TcpListener;

const FALLBACK_JS: &str = include_str!("../assets/fallback.js");

/// A 3×2 red PNG.
const PNG_3X2: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x02, 0x08, 0x02, 0x00, 0x00, 0x00, 0x12, 0x16, 0xf1,
    0x4d, 0x00, 0x00, 0x00, 0x10, 0x49, 0x44, 0x41, 0x54, 0x78, 0xda, 0x63, 0xf8, 0xcf, 0xc0, 0x00,
    0x41, 0x0c, 0x70, 0x16, 0x00, 0x41, 0xd2, 0x05, 0xfb, 0x6f, 0xf1, 0x16, 0xc7, 0x00, 0x00, 0x00,
    0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

/// The page: every asset on an edge; an inline script writes what loaded into `#result`.
fn page(origin: &str, dead_edge: &str, hanging_edge: &str) -> String {
    format!(
        r#"<!doctype html>
<html><head>
<script src="/.edgecache/fallback.js" data-origin="{origin}" data-css-timeout="1500"></script>
<link rel="stylesheet" href="{dead_edge}/style.css?v=1">
<link rel="stylesheet" href="{hanging_edge}/late.css">
<script src="{dead_edge}/app.js"></script>
</head><body>
<img id="logo" src="{dead_edge}/img/logo.png" alt="logo">
<div id="box">box</div>
<div id="late">late</div>
<video id="clip" preload="auto" muted><source src="{dead_edge}/clip.webm" type="video/webm"></video>
<script>
fetch('{dead_edge}/data.json').then(function (r) {{ return r.json(); }})
  .then(function (j) {{ window.dataAnswer = j.answer; }}, function (e) {{ window.dataAnswer = String(e); }});
function report() {{
  return {{
    img: document.getElementById('logo').naturalWidth,
    box: getComputedStyle(document.getElementById('box')).width,
    late: getComputedStyle(document.getElementById('late')).height,
    app: window.appLoaded || null,
    data: window.dataAnswer === undefined ? null : window.dataAnswer,
    reloaded: window.edgecacheFallback.reloaded
  }};
}}
function complete(r) {{
  var kinds = r.reloaded.map(function (x) {{ return x.kind; }});
  return r.img === 3 && r.box === '123px' && r.late === '77px' && r.app === 'yes' &&
    r.data === 42 && kinds.indexOf('source') >= 0;
}}
var polls = 0;
(function poll() {{
  var r = report();
  if (complete(r) || ++polls > 80) {{
    var out = document.createElement('pre');
    out.id = 'result';
    out.textContent = JSON.stringify(r);
    document.body.appendChild(out);
  }} else {{
    setTimeout(poll, 100);
  }}
}})();
</script>
</body></html>
"#
    )
}

fn response(content_type: &str, body: impl Into<axum::body::Body>) -> Response {
    Response::builder()
        .header("content-type", content_type)
        .header("cache-control", "no-store")
        .body(body.into())
        .unwrap()
}

/// The origin: the page, its assets and fallback.js; it logs every path it is asked for.
async fn start_origin(
    dead_edge: String,
    hanging_edge: String,
) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let origin = format!("http://{addr}");
    let log = Arc::new(Mutex::new(Vec::new()));
    let seen = log.clone();
    let app = axum::Router::new().fallback(move |req: Request| {
        let seen = seen.clone();
        let page = page(&origin, &dead_edge, &hanging_edge);
        async move {
            let path = req.uri().path().to_owned();
            seen.lock().unwrap().push(path.clone());
            match path.as_str() {
                "/index.html" => response("text/html; charset=utf-8", page),
                "/.edgecache/fallback.js" => response("text/javascript", FALLBACK_JS),
                "/style.css" => response("text/css", "#box { width: 123px; }"),
                "/late.css" => response("text/css", "#late { height: 77px; }"),
                "/app.js" => response("text/javascript", "window.appLoaded = 'yes';"),
                "/img/logo.png" => response("image/png", PNG_3X2),
                "/data.json" => response("application/json", r#"{"answer": 42}"#),
                // Not a real video: the element errors again, and must not loop.
                "/clip.webm" => response("video/webm", "not a video"),
                _ => Response::builder()
                    .status(404)
                    .body(axum::body::Body::from("not found"))
                    .unwrap(),
            }
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, log)
}

/// A loopback address nothing listens on.
fn dead_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Accepts connections and never answers: a stylesheet from here never loads nor errors.
async fn start_hanging() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    addr
}

/// The JSON the page wrote into `<pre id="result">`.
fn result_json(dom: &str) -> serde_json::Value {
    let start = dom
        .find(r#"<pre id="result">"#)
        .unwrap_or_else(|| panic!("no #result in the DOM:\n{dom}"));
    let text = &dom[start + r#"<pre id="result">"#.len()..];
    let text = &text[..text.find("</pre>").unwrap()];
    let text = text
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assets_from_a_dead_edge_are_loaded_from_the_origin() {
    if !support::browser::available("assets_from_a_dead_edge_are_loaded_from_the_origin") {
        return;
    }
    let dead_edge = format!("http://{}", dead_addr());
    let hanging_edge = format!("http://{}", start_hanging().await);
    let (addr, log) = start_origin(dead_edge.clone(), hanging_edge.clone()).await;
    let origin = format!("http://{addr}");
    let page_url = format!("{origin}/index.html");

    let dom = tokio::task::spawn_blocking(move || support::browser::dump_dom(&page_url, 10_000))
        .await
        .unwrap();
    let result = result_json(&dom);

    assert_eq!(result["img"], 3, "image naturalWidth: {result}");
    assert_eq!(result["box"], "123px", "style.css applied: {result}");
    assert_eq!(
        result["late"], "77px",
        "late.css (hanging edge) applied: {result}"
    );
    assert_eq!(result["app"], "yes", "app.js ran: {result}");
    assert_eq!(result["data"], 42, "fetch retried on the origin: {result}");

    let reloaded = result["reloaded"].as_array().unwrap();
    let mut kinds: Vec<&str> = reloaded
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        [
            "fetch",
            "img",
            "script",
            "source",
            "stylesheet",
            "stylesheet"
        ],
        "each failed asset reloaded exactly once: {result}"
    );
    for r in reloaded {
        let (from, to) = (r["from"].as_str().unwrap(), r["to"].as_str().unwrap());
        assert!(
            from.starts_with(&dead_edge) || from.starts_with(&hanging_edge),
            "{r}"
        );
        assert!(to.starts_with(&format!("{origin}/")), "{r}");
    }
    assert!(
        reloaded
            .iter()
            .any(|r| r["to"] == format!("{origin}/style.css?v=1")),
        "the query is kept: {result}"
    );

    let log = log.lock().unwrap().clone();
    for path in [
        "/index.html",
        "/.edgecache/fallback.js",
        "/style.css",
        "/late.css",
        "/app.js",
        "/img/logo.png",
        "/data.json",
        "/clip.webm",
    ] {
        assert!(
            log.iter().any(|p| p == path),
            "origin never asked for {path}: {log:?}"
        );
    }
}
