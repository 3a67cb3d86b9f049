//! The built binary: a configuration it cannot use stops it at start with
//! exit code 64 and one line naming the cause.

use std::process::Command;

fn run(config: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_auth-proxy"))
        .args(["--config", &config.to_string_lossy(), "--bind-address", "127.0.0.1"])
        .args(["--admin-listen", "127.0.0.1:0"])
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .output()
        .expect("the binary runs")
}

fn config(password_file: &std::path::Path) -> String {
    serde_json::json!({
        "realm": "vigil",
        "users": {"vigil": password_file},
        "routes": [{
            "name": "prometheus", "port": 1, "upstream": "127.0.0.1:9090",
            "body_limit": 1024, "upstream_timeout": "30s",
            "grants": [{"user": "vigil"}]
        }]
    })
    .to_string()
}

#[test]
fn a_missing_password_file_exits_64_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("users").join("vigil");
    let file = dir.path().join("config.json");
    std::fs::write(&file, config(&missing)).unwrap();
    let out = run(&file);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains(&*missing.to_string_lossy()) && stderr.contains("users.vigil"), "{stderr}");
}

#[test]
fn a_bad_configuration_exits_64_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("vigil");
    std::fs::write(&password, "s3cret-value\n").unwrap();
    let mut value: serde_json::Value = serde_json::from_str(&config(&password)).unwrap();
    value["routes"][0]["upstream"] = "10.1.2.3:9090".into();
    let file = dir.path().join("config.json");
    std::fs::write(&file, value.to_string()).unwrap();
    let out = run(&file);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("routes[0].upstream"), "{stderr}");
    assert!(!stderr.contains("s3cret-value"), "no password in the error: {stderr}");
}
