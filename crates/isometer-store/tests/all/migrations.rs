//! Migrations apply once, in order, and refuse a changed history.

use isometer_store::{Migration, StoreError};

#[tokio::test]
async fn migrations_apply_once_and_a_rerun_is_a_no_op() {
    let store = isometer_testkit::empty_database().await;
    let shipped = Migration::shipped().expect("shipped");
    let first = store.migrate().await.expect("first run");
    assert_eq!(
        first.applied,
        shipped.iter().map(|m| m.name.clone()).collect::<Vec<_>>()
    );
    assert_eq!(first.already_applied, 0);

    let second = store.migrate().await.expect("second run");
    assert!(second.applied.is_empty());
    assert_eq!(second.already_applied, shipped.len());
    assert_eq!(store.totals().await.expect("tables exist").events, 0);
}

#[tokio::test]
async fn a_changed_applied_migration_is_reported_by_name() {
    let store = isometer_testkit::empty_database().await;
    let mut migrations = vec![
        Migration::new(
            "0001_first.sql",
            "CREATE TABLE a (x UInt8) ENGINE = MergeTree ORDER BY x",
        )
        .expect("valid"),
        Migration::new(
            "0002_second.sql",
            "CREATE TABLE b (x UInt8) ENGINE = MergeTree ORDER BY x;\n-- done\n",
        )
        .expect("valid"),
    ];
    store.migrate_with(&migrations).await.expect("applies");

    migrations[1] = Migration::new(
        "0002_second.sql",
        "CREATE TABLE b (x UInt16) ENGINE = MergeTree ORDER BY x",
    )
    .expect("valid");
    match store.migrate_with(&migrations).await {
        Err(StoreError::MigrationChanged { name, .. }) => assert_eq!(name, "0002_second.sql"),
        other => panic!("expected MigrationChanged, got {other:?}"),
    }
    let message = store
        .migrate_with(&migrations)
        .await
        .expect_err("still refused")
        .to_string();
    assert!(
        message.contains("0002_second.sql") && message.contains("must not change"),
        "{message}"
    );
}

#[tokio::test]
async fn a_failing_migration_names_its_file_and_is_not_recorded() {
    let store = isometer_testkit::empty_database().await;
    let broken = [Migration::new(
        "0001_broken.sql",
        "CREATE TABLE c (x NoSuchType) ENGINE = MergeTree ORDER BY x",
    )
    .expect("valid")];
    let message = store
        .migrate_with(&broken)
        .await
        .expect_err("fails")
        .to_string();
    assert!(message.contains("0001_broken.sql"), "{message}");

    let fixed = [Migration::new(
        "0001_broken.sql",
        "CREATE TABLE c (x UInt8) ENGINE = MergeTree ORDER BY x",
    )
    .expect("valid")];
    let report = store
        .migrate_with(&fixed)
        .await
        .expect("a fixed file applies");
    assert_eq!(report.applied, vec!["0001_broken.sql".to_owned()]);
}
