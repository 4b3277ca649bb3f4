//! The manual pages come from the command line's own definitions: every
//! visible verb gets a page in section 8 that names it and its options.

use std::process::Command;

#[test]
fn every_verb_has_a_manual_page() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sixgate-broker"))
        .args(["man", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (page, option) in [
        ("sixgate-broker", "\\-\\-config"),
        ("sixgate-broker-check", "\\-\\-log\\-level"),
        ("sixgate-broker-client-add", "\\-\\-rsa"),
        ("sixgate-broker-site-config", "\\-\\-admin\\-from"),
        ("sixgate-broker-ca-issue-broker", "\\-\\-out"),
        ("sixgate-broker-reload", "\\-\\-config"),
    ] {
        let text = std::fs::read_to_string(dir.path().join(format!("{page}.8")))
            .unwrap_or_else(|e| panic!("{page}.8: {e}"));
        assert!(text.contains(&format!(".TH {page} 8")), "{page}: {text}");
        assert!(text.contains(option), "{page} lacks {option}: {text}");
    }
    assert!(
        !dir.path().join("sixgate-broker-man.8").exists(),
        "the hidden verb has none"
    );
}
