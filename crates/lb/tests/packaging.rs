//! The systemd unit in `packaging/` starts on a stock system: it passes
//! `systemd-analyze verify` with the binary under test in place of the
//! installed one, every writable path it names either is created by the
//! unit or may be missing, and its documentation links name files that
//! docs/deployment.md installs.

mod common;

use std::process::Command;

use common::{binary, require_tool, temp_dir, workspace_root};

const INSTALLED: &str = "/usr/local/bin/expressgateway";
const DOC_DIR: &str = "/usr/share/doc/expressgateway/";

fn unit() -> String {
    std::fs::read_to_string(workspace_root().join("packaging/systemd/expressgateway.service"))
        .unwrap()
}

/// Values of `key=` lines, split on whitespace.
fn values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    let prefix = format!("{key}=");
    unit.lines()
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .flat_map(str::split_whitespace)
        .collect()
}

#[test]
fn systemd_unit_verifies_with_the_binary_under_test() {
    require_tool("systemd-analyze");
    let unit = unit();
    assert!(
        values(&unit, "ExecStart").contains(&INSTALLED),
        "the unit must run {INSTALLED}:\n{unit}"
    );
    let copy = temp_dir("systemd").join("expressgateway.service");
    std::fs::write(&copy, unit.replace(INSTALLED, binary())).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Unknown keys and bad values are only warnings to systemd: any line
    // on stderr is a defect.
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {}\n{stderr}",
        out.status
    );
}

#[test]
fn systemd_unit_needs_no_directory_or_document_that_is_not_installed() {
    let unit = unit();
    for path in values(&unit, "ReadWritePaths") {
        assert!(
            path.starts_with('-'),
            "ReadWritePaths={path} stops the start when it does not exist; prefix it with -"
        );
    }
    assert_eq!(values(&unit, "LogsDirectory"), ["expressgateway"]);
    let deployment = std::fs::read_to_string(workspace_root().join("docs/deployment.md")).unwrap();
    assert!(
        deployment.contains(DOC_DIR),
        "docs/deployment.md does not install {DOC_DIR}"
    );
    let docs = values(&unit, "Documentation");
    assert!(!docs.is_empty(), "{unit}");
    for doc in docs {
        let installed = doc
            .strip_prefix("file:")
            .unwrap_or_else(|| panic!("Documentation={doc} is not a file: link"));
        let source = installed
            .strip_prefix(DOC_DIR)
            .unwrap_or_else(|| panic!("Documentation={doc} is outside {DOC_DIR}"));
        assert!(
            workspace_root().join(source).is_file(),
            "Documentation={doc}: {source} is not in the repository"
        );
    }
}
