//! Migrations for a ClickHouse cluster: every table becomes a local table on each shard
//! (`NAME_local`) and a `Distributed` table over them under the original name, all created
//! `ON CLUSTER`, so the rest of isometer reads and writes the same names either way.
//!
//! The shipped migrations are written for one server; this rewrites the five shapes they
//! use (CREATE TABLE, CREATE MATERIALIZED VIEW ... TO, ALTER TABLE, INSERT INTO ... SELECT
//! to fill a new rollup, DROP TABLE IF EXISTS) and refuses anything else, so a new
//! migration cannot silently skip the cluster.

use crate::error::StoreError;

/// How rows of a table are spread over the shards: a task's attempts and its task record
/// stay together; rollups are written where their rows land and only read through the
/// Distributed table.
fn sharding_key(table: &str) -> &'static str {
    match table {
        "usage_events" | "tasks" | "manifests" => "cityHash64(task_id)",
        // The same key always lands on the same shard, where the replacing table keeps one.
        "artifacts" => "cityHash64(sha256)",
        "config_versions" | "config_changes" => "cityHash64(version)",
        "api_keys" => "cityHash64(key_id)",
        "approvals" => "cityHash64(approval_id)",
        "statements" => "cityHash64(tenant_id)",
        _ => "rand()",
    }
}

/// The statements that apply `statement` to every shard of `cluster`.
pub(crate) fn for_cluster(
    statement: &str,
    cluster: &str,
    database: &str,
) -> Result<Vec<String>, StoreError> {
    let sql = strip_leading_comments(statement);
    let not_understood = || {
        StoreError::Corrupt(format!(
            "a migration statement cannot be applied to cluster `{cluster}`: {}",
            sql.lines().next().unwrap_or_default()
        ))
    };
    if let Some(rest) = sql.strip_prefix("CREATE TABLE IF NOT EXISTS ") {
        let (name, body) = split_name(rest).ok_or_else(not_understood)?;
        return Ok(vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {database}.{name}_local ON CLUSTER {cluster}{body}"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {database}.{name} ON CLUSTER {cluster} \
                 AS {database}.{name}_local \
                 ENGINE = Distributed({cluster}, {database}, {name}_local, {key})",
                key = sharding_key(name)
            ),
        ]);
    }
    if let Some(rest) = sql.strip_prefix("CREATE MATERIALIZED VIEW IF NOT EXISTS ") {
        let (view, after) = split_name(rest).ok_or_else(not_understood)?;
        let after = after.trim_start();
        let after = after.strip_prefix("TO ").ok_or_else(not_understood)?;
        let (target, select) = split_name(after).ok_or_else(not_understood)?;
        let (before_from, from) = select.split_once("FROM ").ok_or_else(not_understood)?;
        let (source, tail) = split_name(from).ok_or_else(not_understood)?;
        return Ok(vec![format!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.{view} ON CLUSTER {cluster} \
             TO {database}.{target}_local{before_from}FROM {database}.{source}_local{tail}"
        )]);
    }
    if let Some(rest) = sql.strip_prefix("ALTER TABLE ") {
        let (name, change) = split_name(rest).ok_or_else(not_understood)?;
        return Ok(vec![
            format!("ALTER TABLE {database}.{name}_local ON CLUSTER {cluster}{change}"),
            format!("ALTER TABLE {database}.{name} ON CLUSTER {cluster}{change}"),
        ]);
    }
    if let Some(rest) = sql.strip_prefix("INSERT INTO ") {
        // Filling a rollup from recorded rows: once, through the Distributed tables, which
        // read every shard and spread the result like any insert.
        let (target, select) = split_name(rest).ok_or_else(not_understood)?;
        let (before_from, from) = select.split_once("FROM ").ok_or_else(not_understood)?;
        let (source, tail) = split_name(from).ok_or_else(not_understood)?;
        return Ok(vec![format!(
            "INSERT INTO {database}.{target}{before_from}FROM {database}.{source}{tail}"
        )]);
    }
    if let Some(rest) = sql.strip_prefix("DROP TABLE IF EXISTS ") {
        let (name, tail) = split_name(rest).ok_or_else(not_understood)?;
        if !tail.trim().is_empty() {
            return Err(not_understood());
        }
        // A view exists once per shard under its own name; a table is also a local table.
        if name.ends_with("_mv") {
            return Ok(vec![format!(
                "DROP TABLE IF EXISTS {database}.{name} ON CLUSTER {cluster}"
            )]);
        }
        return Ok(vec![
            format!("DROP TABLE IF EXISTS {database}.{name} ON CLUSTER {cluster}"),
            format!("DROP TABLE IF EXISTS {database}.{name}_local ON CLUSTER {cluster}"),
        ]);
    }
    Err(not_understood())
}

fn strip_leading_comments(statement: &str) -> &str {
    let mut sql = statement.trim_start();
    while let Some(rest) = sql.strip_prefix("--") {
        sql = rest
            .split_once('\n')
            .map_or("", |(_, after)| after)
            .trim_start();
    }
    sql
}

/// Splits an identifier off the front of `text`: `(name, the rest)`.
fn split_name(text: &str) -> Option<(&str, &str)> {
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    (end > 0).then(|| text.split_at(end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_become_local_tables_under_a_distributed_one() {
        let out = for_cluster(
            "-- one row per attempt\nCREATE TABLE IF NOT EXISTS usage_events\n(\n    a String\n)\nENGINE = MergeTree ORDER BY a",
            "shards",
            "isometer",
        )
        .expect("understood");
        assert_eq!(
            out,
            [
                "CREATE TABLE IF NOT EXISTS isometer.usage_events_local ON CLUSTER shards\n(\n    a String\n)\nENGINE = MergeTree ORDER BY a",
                "CREATE TABLE IF NOT EXISTS isometer.usage_events ON CLUSTER shards AS isometer.usage_events_local ENGINE = Distributed(shards, isometer, usage_events_local, cityHash64(task_id))",
            ]
        );
    }

    #[test]
    fn fills_read_and_write_the_distributed_tables_and_drops_reach_every_shard() {
        let out = for_cluster(
            "INSERT INTO r\nSELECT a, countState() AS n\nFROM tasks\nGROUP BY a",
            "shards",
            "db",
        )
        .expect("understood");
        assert_eq!(
            out,
            ["INSERT INTO db.r\nSELECT a, countState() AS n\nFROM db.tasks\nGROUP BY a"]
        );
        let out = for_cluster("DROP TABLE IF EXISTS r_mv", "shards", "db").expect("understood");
        assert_eq!(out, ["DROP TABLE IF EXISTS db.r_mv ON CLUSTER shards"]);
        let out = for_cluster("DROP TABLE IF EXISTS r", "shards", "db").expect("understood");
        assert_eq!(
            out,
            [
                "DROP TABLE IF EXISTS db.r ON CLUSTER shards",
                "DROP TABLE IF EXISTS db.r_local ON CLUSTER shards"
            ]
        );
        assert!(for_cluster("DROP TABLE IF EXISTS r SYNC", "shards", "db").is_err());
    }

    #[test]
    fn views_and_alters_follow_the_local_tables() {
        let out = for_cluster(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS v_mv TO v AS\nSELECT a, countState() AS n\nFROM usage_events\nGROUP BY a",
            "shards",
            "db",
        )
        .expect("understood");
        assert_eq!(
            out,
            [
                "CREATE MATERIALIZED VIEW IF NOT EXISTS db.v_mv ON CLUSTER shards TO db.v_local AS\nSELECT a, countState() AS n\nFROM db.usage_events_local\nGROUP BY a"
            ]
        );
        let out = for_cluster("ALTER TABLE tasks ADD COLUMN b UInt64", "shards", "db")
            .expect("understood");
        assert_eq!(
            out,
            [
                "ALTER TABLE db.tasks_local ON CLUSTER shards ADD COLUMN b UInt64",
                "ALTER TABLE db.tasks ON CLUSTER shards ADD COLUMN b UInt64",
            ]
        );
        assert!(for_cluster("DROP TABLE tasks", "shards", "db").is_err());
    }

    #[test]
    fn every_shipped_statement_has_a_cluster_form() {
        for migration in crate::Migration::shipped().expect("shipped") {
            for statement in migration.statements() {
                for_cluster(&statement, "c", "db")
                    .unwrap_or_else(|e| panic!("{}: {e}", migration.name));
            }
        }
    }
}
