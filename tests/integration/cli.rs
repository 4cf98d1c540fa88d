//! The `sluice` command as a user runs it: exit codes and what it prints.

use std::process::Command;

fn sluice() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
}

#[test]
fn validate_prints_the_graph_and_exits_zero() {
    let out = sluice()
        .args([
            "validate",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/configs/default.yaml"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(
            "pipeline traces: [otlp] -> [memory_limiter, tail_sampling, batch] -> [file/traces]"
        ),
        "{stdout}"
    );
}

#[test]
fn bad_config_exits_64_with_a_located_message() {
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/config/invalid/unknown_key.yaml"
    );
    for args in [vec!["validate", "--config", file], vec!["--config", file]] {
        let out = sluice().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(64));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("unknown_key.yaml:5:9: receivers.otlp.protocols.grpc.endpont"),
            "{stderr}"
        );
    }
}

#[test]
fn missing_config_file_and_bad_flags_exit_64() {
    let out = sluice()
        .args(["--config", "/nonexistent/sluice.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("cannot read config file /nonexistent/sluice.yaml")
    );
    let out = sluice().args(["--bogus"]).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn version_and_help() {
    let out = sluice().arg("--version").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("sluice {}", env!("CARGO_PKG_VERSION"))
    );
    let out = sluice().arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("sluice validate"));
}
