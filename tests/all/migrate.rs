//! `isometer migrate` against a configured server: no managed server, idempotent.

#[test]
fn migrate_uses_the_configured_url_and_a_rerun_applies_nothing() {
    let url = isometer_testkit::clickhouse().url();
    let data = tempfile::tempdir().expect("tempdir");
    let database = format!("cli_migrate_{}", std::process::id());
    let migrate = || {
        let output = crate::isometer()
            .arg("--config")
            .arg(crate::config_dir())
            .arg("--data-dir")
            .arg(data.path().join("unused"))
            .env("ISOMETER_CLICKHOUSE_URL", &url)
            .env("ISOMETER_DATABASE", &database)
            .arg("migrate")
            .output()
            .expect("runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let shipped = isometer_store::Migration::shipped().expect("shipped migrations");
    let first = migrate();
    for m in &shipped {
        assert!(first.contains(&format!("applied {}", m.name)), "{first}");
    }
    let second = migrate();
    assert!(
        second.contains(&format!("0 applied, {} already applied", shipped.len())),
        "{second}"
    );
    assert!(
        !data.path().join("unused").exists(),
        "no managed server was started"
    );
}
