//! `edgecache up`: the whole CDN on one machine — origin, three PoPs on their own loopback
//! addresses, purge API and router — each its own child process, supervised: a child that
//! dies is reported and restarted, and Ctrl-C / SIGTERM stops them all.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tracing::{info, warn};

/// One PoP of the local topology.
pub struct PopSpec {
    pub name: &'static str,
    pub ip: &'static str,
    pub city: &'static str,
    pub lat: f64,
    pub lon: f64,
}

/// The default PoPs: Ashburn, Dublin, Mumbai.
pub const POPS: [PopSpec; 3] = [
    PopSpec {
        name: "us-east",
        ip: "127.0.1.1",
        city: "Ashburn",
        lat: 39.04,
        lon: -77.49,
    },
    PopSpec {
        name: "eu-west",
        ip: "127.0.2.1",
        city: "Dublin",
        lat: 53.35,
        lon: -6.26,
    },
    PopSpec {
        name: "ap-south",
        ip: "127.0.3.1",
        city: "Mumbai",
        lat: 19.08,
        lon: 72.88,
    },
];

/// The bundled demo site, written out when no `--site` is given.
const DEMO: [(&str, &[u8]); 5] = [
    ("index.html", include_bytes!("../assets/demo/index.html")),
    (
        "css/site.3f9c2a1b.css",
        include_bytes!("../assets/demo/css/site.3f9c2a1b.css"),
    ),
    (
        "js/app.5d1e9b7c.js",
        include_bytes!("../assets/demo/js/app.5d1e9b7c.js"),
    ),
    (
        "img/logo.8a4f2c19.png",
        include_bytes!("../assets/demo/img/logo.8a4f2c19.png"),
    ),
    (
        "video/intro.4b7e1d2a.mp4",
        include_bytes!("../assets/demo/video/intro.4b7e1d2a.mp4"),
    ),
];

#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Site to serve from the origin (default: the bundled demo site).
    #[arg(long)]
    pub site: Option<PathBuf>,
    /// Where disk caches and the purge log go.
    #[arg(long, default_value = "./edgecache-data")]
    pub data_dir: PathBuf,
    /// How many PoPs (1 to 3).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=3))]
    pub pops: u8,
    /// Report a child that dies, but do not restart it.
    #[arg(long)]
    pub no_restart: bool,
    /// Purge API token (default: a fixed local one).
    #[arg(long, env = "EDGECACHE_PURGE_TOKEN", default_value = "edgecache-local")]
    pub token: String,
    /// Serve the PoPs and the purge API over HTTPS with a certificate from a local CA
    /// (generated once into DATA_DIR/tls; trust DATA_DIR/tls/ca.pem).
    #[arg(long)]
    pub tls: bool,
}

/// The local CA and the certificate every PoP and the purge API present.
pub struct LocalTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The names the local certificate covers: every loopback address `up` serves on.
fn local_names() -> Vec<String> {
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    names.extend(POPS.iter().map(|p| p.ip.to_owned()));
    names
}

/// Reuses `dir`'s CA and certificate, or generates them, so a CA a user trusted once stays
/// valid across runs.
pub fn local_tls(dir: &Path) -> anyhow::Result<LocalTls> {
    let tls = LocalTls {
        ca: dir.join("ca.pem"),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    let usable =
        tls.ca.exists() && edgecache_tls::cert::load_certified_key(&tls.cert, &tls.key).is_ok();
    if !usable {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let ca = edgecache_tls::selfsigned::LocalCa::new()?;
        let issued = ca.issue(&local_names())?;
        std::fs::write(&tls.ca, &ca.cert_pem)?;
        std::fs::write(&tls.cert, &issued.cert_pem)?;
        write_private(&tls.key, issued.key_pem.as_bytes())?;
        info!(ca = %tls.ca.display(), "generated a local CA and certificate");
    }
    Ok(tls)
}

/// Writes a private key readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(bytes)?;
    Ok(())
}

/// One supervised child: how to start it and what to call it.
struct Part {
    name: String,
    args: Vec<String>,
}

/// Runs the local CDN until Ctrl-C / SIGTERM.
pub async fn up(args: UpArgs) -> anyhow::Result<()> {
    let data = absolute(&args.data_dir)?;
    std::fs::create_dir_all(&data).with_context(|| format!("--data-dir {}", data.display()))?;
    let site = match &args.site {
        Some(s) => absolute(s)?,
        None => write_demo(&data.join("site"))?,
    };
    // Signals are watched from the start: a SIGTERM while children start must not kill
    // `up` and orphan them.
    let (signal_tx, mut signalled) = watch::channel(false);
    tokio::spawn(async move {
        crate::cli::shutdown_signal().await;
        let _ = signal_tx.send(true);
    });
    let exe = std::env::current_exe().context("cannot find the edgecache executable")?;
    let tls = if args.tls {
        Some(local_tls(&data.join("tls"))?)
    } else {
        None
    };
    let parts = plan(&args, &data, &site, tls.as_ref());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<String>(parts.len());
    for part in parts {
        tasks.push(tokio::spawn(supervise(
            exe.clone(),
            part,
            !args.no_restart,
            stop_rx.clone(),
            ready_tx.clone(),
        )));
    }
    drop(ready_tx);
    let expected = tasks.len();
    let mut ready = 0;
    let started = tokio::time::timeout(Duration::from_secs(30), async {
        while ready < expected {
            tokio::select! {
                r = ready_rx.recv() => match r {
                    Some(_) => ready += 1,
                    None => break,
                },
                _ = signalled.changed() => break,
            }
        }
    })
    .await;
    if !*signalled.borrow() {
        if started.is_err() || ready < expected {
            warn!(ready, expected, "not every part came up");
        }
        print_table(&args, &site, tls.as_ref());
        let _ = signalled.wait_for(|s| *s).await;
    }
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    println!("edgecache up: stopped");
    Ok(())
}

fn plan(args: &UpArgs, data: &Path, site: &Path, tls: Option<&LocalTls>) -> Vec<Part> {
    let s = |v: &str| v.to_owned();
    let origin = "http://127.0.0.1:8000";
    let scheme = if tls.is_some() { "https" } else { "http" };
    let purge = format!("{scheme}://127.0.0.1:8070");
    let tls_flags = |ca: bool| -> Vec<String> {
        let Some(t) = tls else { return Vec::new() };
        let mut flags = vec![
            s("--tls-cert"),
            t.cert.display().to_string(),
            s("--tls-key"),
            t.key.display().to_string(),
        ];
        if ca {
            flags.extend([s("--purge-ca"), t.ca.display().to_string()]);
        }
        flags
    };
    let mut parts = vec![
        Part {
            name: s("origin"),
            args: vec![
                s("origin"),
                s("--root"),
                site.display().to_string(),
                s("--listen"),
                s("127.0.0.1:8000"),
            ],
        },
        Part {
            name: s("purge-api"),
            args: vec![
                s("purge-api"),
                s("--listen"),
                s("127.0.0.1:8070"),
                s("--token"),
                args.token.clone(),
                s("--data-dir"),
                data.join("purge-api").display().to_string(),
            ]
            .into_iter()
            .chain(tls_flags(false))
            .collect(),
        },
    ];
    let mut route = vec![
        s("route"),
        s("--listen"),
        s("127.0.0.1:8053"),
        s("--dns-listen"),
        s("127.0.0.1:5353"),
        s("--origin"),
        s(origin),
        s("--purge-api"),
        purge.clone(),
        s("--purge-token"),
        args.token.clone(),
    ];
    for pop in POPS.iter().take(usize::from(args.pops)) {
        parts.push(Part {
            name: pop.name.to_owned(),
            args: vec![
                s("edge"),
                s("--origin"),
                s(origin),
                s("--listen"),
                format!("{}:8080", pop.ip),
                s("--admin"),
                format!("{}:9080", pop.ip),
                s("--pop"),
                s(pop.name),
                s("--disk-dir"),
                data.join(pop.name).display().to_string(),
                s("--disk-size"),
                s("1GiB"),
                s("--purge-api"),
                purge.clone(),
                s("--purge-token"),
                args.token.clone(),
            ]
            .into_iter()
            .chain(tls_flags(true))
            .collect(),
        });
        route.push(s("--pop"));
        route.push(format!(
            "{}={scheme}://{}:8080@{},{},admin=http://{}:9080",
            pop.name, pop.ip, pop.lat, pop.lon, pop.ip
        ));
    }
    parts.push(Part {
        name: s("router"),
        args: route,
    });
    parts
}

/// Starts `part`, announces it on `ready` once it prints its address, and restarts it when
/// it dies (unless `restart` is off) until `stop` turns true; then stops it with SIGTERM.
async fn supervise(
    exe: PathBuf,
    part: Part,
    restart: bool,
    mut stop: watch::Receiver<bool>,
    ready: tokio::sync::mpsc::Sender<String>,
) {
    let mut announced = false;
    let mut backoff = Duration::from_millis(200);
    loop {
        let mut child = match Command::new(&exe)
            .args(&part.args)
            .env("EDGECACHE_SUPERVISED", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                warn!(part = %part.name, error = %e, "cannot start");
                return;
            }
        };
        if let Some(out) = child.stdout.take() {
            let ready = ready.clone();
            let name = part.name.clone();
            let first = !announced;
            tokio::spawn(async move {
                let mut lines = BufReader::new(out).lines();
                let mut sent = false;
                while let Ok(Some(line)) = lines.next_line().await {
                    if first && !sent && line.starts_with("listening on ") {
                        let _ = ready.send(name.clone()).await;
                        sent = true;
                    }
                }
            });
            announced = true;
        }
        let pid = child.id();
        tokio::select! {
            status = child.wait() => {
                let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                if *stop.borrow() {
                    return;
                }
                warn!(part = %part.name, %status, "child exited");
                eprintln!("edgecache up: {} exited ({status}){}", part.name, if restart { "; restarting" } else { "" });
                if !restart {
                    return;
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            _ = stop.changed() => {
                terminate(&mut child, pid, &part.name).await;
                return;
            }
        }
    }
}

/// SIGTERM, then up to 5 s for a clean exit, then SIGKILL.
async fn terminate(child: &mut Child, pid: Option<u32>, name: &str) {
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    match tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
        Ok(_) => info!(part = name, "stopped"),
        Err(_) => {
            warn!(part = name, "did not stop within 5 s; killing");
            let _ = child.kill().await;
        }
    }
}

fn write_demo(dir: &Path) -> anyhow::Result<PathBuf> {
    for (name, bytes) in DEMO {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(dir.to_path_buf())
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    };
    // `./edgecache-data` reads better without the `.`.
    Ok(joined
        .components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect())
}

fn print_table(args: &UpArgs, site: &Path, tls: Option<&LocalTls>) {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let cacert = tls.map_or(String::new(), |t| format!("--cacert {} ", t.ca.display()));
    println!();
    println!("edgecache is up: serving {}", site.display());
    if let Some(t) = tls {
        println!("TLS: certificates from the local CA {}", t.ca.display());
    }
    println!();
    println!("  {:<10} {:<26} admin", "part", "url");
    println!("  {:<10} http://127.0.0.1:8000", "origin");
    for pop in POPS.iter().take(usize::from(args.pops)) {
        println!(
            "  {:<10} {:<26} http://{}:9080   ({})",
            pop.name,
            format!("{scheme}://{}:8080", pop.ip),
            pop.ip,
            pop.city
        );
    }
    println!("  {:<10} {scheme}://127.0.0.1:8070", "purge-api");
    println!(
        "  {:<10} {:<26} dns 127.0.0.1:5353, zone cdn.test",
        "router", "http://127.0.0.1:8053"
    );
    println!();
    println!("Try:");
    println!(
        "  curl -si {cacert}{scheme}://127.0.2.1:8080/css/site.3f9c2a1b.css | grep -i cache-status"
    );
    println!("  open http://127.0.0.1:8053/dashboard");
    println!("  curl -s --interface 127.2.0.9 http://127.0.0.1:8053/v1/route");
    println!(
        "  curl -si --interface 127.3.0.9 http://127.0.0.1:8053/index.html | grep -i location"
    );
    println!("  dig @127.0.0.1 -p 5353 assets.cdn.test +subnet=127.1.0.0/24");
    let ca_flag = tls.map_or(String::new(), |t| format!(" --ca {}", t.ca.display()));
    println!(
        "  cargo run --release -- purge --api {scheme}://127.0.0.1:8070{ca_flag} --token {} --prefix /css/ --wait",
        args.token
    );
    println!("Ctrl-C stops everything.");
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[test]
    fn the_router_reads_every_pops_admin_and_the_purge_api() {
        let args = UpArgs {
            site: None,
            data_dir: PathBuf::from("/data"),
            pops: 3,
            no_restart: false,
            token: "t0ken".into(),
            tls: false,
        };
        let parts = plan(&args, Path::new("/data"), Path::new("/site"), None);
        let route = parts.iter().find(|p| p.name == "router").unwrap();
        let cli = crate::cli::Cli::try_parse_from(
            std::iter::once("edgecache".to_owned()).chain(route.args.iter().cloned()),
        )
        .unwrap();
        let crate::cli::Command::Route(route_args) = cli.command else {
            panic!("not a route command: {:?}", route.args);
        };
        let config = crate::router::config_from(&route_args, None).unwrap();
        assert_eq!(
            config.dashboard.purge_api.as_deref(),
            Some("http://127.0.0.1:8070")
        );
        assert_eq!(config.dashboard.purge_token.as_deref(), Some("t0ken"));
        let admins: Vec<_> = config.pops.iter().map(|p| p.admin_url.as_deref()).collect();
        assert_eq!(
            admins,
            [
                Some("http://127.0.1.1:9080"),
                Some("http://127.0.2.1:9080"),
                Some("http://127.0.3.1:9080")
            ]
        );
    }
}
