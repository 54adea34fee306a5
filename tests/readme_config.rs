//! The configuration example in the README is a valid config file.

#[test]
fn readme_config_example_parses_and_validates() {
    let readme = include_str!("../README.md");
    let section = &readme[readme
        .find("## Configuration")
        .expect("configuration section")..];
    let start = section.find("```toml").expect("toml block") + "```toml".len();
    let block = &section[start..];
    let block = &block[..block.find("```").expect("end of block")];
    let config = edgecache::config::FileConfig::parse(block).unwrap_or_else(|e| panic!("{e:#}"));
    let edge = config.edge.expect("[edge] table");
    edge.validate().unwrap();
    assert_eq!(edge.origins.len(), 2);
    assert!(config.origin.is_some());
    let purge_api = config.purge_api.expect("[purge_api] table");
    purge_api.validate().unwrap();
    let router = config.router.expect("[router] table");
    router.validate().unwrap();
    assert!(router.dashboard.purge_api.is_some());
}
