//! The config file as users meet it: the shipped example is valid and fully documented, and
//! `edgecache check-config` accepts a good file and names the key of a bad one.

use std::process::Command;

use edgecache::config::FileConfig;

#[test]
fn example_config_parses_and_validates() {
    let text = include_str!("../edgecache.example.toml");
    let config = FileConfig::parse(text).unwrap_or_else(|e| panic!("{e}"));
    config.validate().unwrap_or_else(|e| panic!("{e}"));
    let edge = config.edge.as_ref().expect("[edge]");
    assert_eq!(edge.origins.len(), 2);
    assert!(config.origin.is_some() && config.purge_api.is_some() && config.router.is_some());
}

#[test]
fn every_key_of_the_example_is_documented() {
    let docs = include_str!("../docs/config.md");
    let text = include_str!("../edgecache.example.toml");
    let mut keys = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with('[') {
            continue;
        }
        if let Some((key, value)) = line.split_once(" = ") {
            keys.push(key.trim().to_owned());
            // Inline tables: `s3 = { endpoint = "…", bucket = "…" }`.
            if let Some(inner) = value.trim().strip_prefix('{') {
                for pair in inner.trim_end_matches('}').split(", ") {
                    if let Some((k, _)) = pair.split_once(" = ") {
                        keys.push(k.trim().to_owned());
                    }
                }
            }
        }
    }
    assert!(keys.len() > 40, "{keys:?}");
    for key in keys {
        assert!(
            docs.contains(&format!("`{key}`")),
            "docs/config.md does not document `{key}`"
        );
    }
}

fn check_config(text: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edgecache.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_edgecache"))
        .arg("check-config")
        .arg(&path)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run edgecache");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_accepts_the_example() {
    let (ok, stdout, stderr) = check_config(include_str!("../edgecache.example.toml"));
    assert!(ok, "{stderr}");
    assert!(stdout.starts_with("ok: "), "{stdout}");
    assert!(stdout.contains("edge: pop us-east"), "{stdout}");
    assert!(stdout.contains("router:"), "{stdout}");
}

#[test]
fn check_config_names_the_bad_key() {
    let origin = "[[edge.origins]]\nurl = \"http://127.0.0.1:8000\"\n";
    for (text, key) in [
        (
            format!("{origin}[edge.memory]\nsiez = \"1MiB\"\n"),
            "edge.memory.siez",
        ),
        (
            format!("{origin}[edge.memory]\nsize = \"lots\"\n"),
            "edge.memory.size",
        ),
        (
            format!("{origin}[[edge.origins]]\nurl = \"ftp://127.0.0.1\"\n"),
            "edge.origins[1].url",
        ),
        ("[edge]\npop = \"x\"\n".to_owned(), "edge.origins"),
        ("[purge_api]\nburst = 5\n".to_owned(), "purge_api.token"),
        ("[edge\n".to_owned(), "line 1"),
    ] {
        let (ok, _, stderr) = check_config(&text);
        assert!(!ok, "{text:?} was accepted");
        assert!(stderr.contains(key), "{text:?}: {stderr}");
    }
}
