//! The validated configuration.

use crate::host_rule::HostRule;
use rust_decimal::Decimal;
use std::path::PathBuf;

/// A validated configuration directory.
#[derive(Debug, Clone)]
pub struct Config {
    pub dir: PathBuf,
    /// sha256 over the files' names and contents: changes whenever any file does.
    pub version: String,
    pub tenants: Vec<Tenant>,
    pub tools: Vec<Tool>,
    pub policies: Vec<Policy>,
    pub rate_cards: Vec<RateCard>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub tier: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tool {
    pub id: String,
    /// Absolute or configuration-relative path, resolved against the configuration directory.
    pub artifact: PathBuf,
    /// Where the tool is declared, for error messages about its artifact.
    pub declared_at: String,
    pub description: String,
    pub default_use_case: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub id: String,
    pub tool_id: String,
    pub tenant_tier: String,
    pub purpose: String,
    pub max_duration_ms: u64,
    pub max_fuel: u64,
    pub max_memory_bytes: u64,
    pub max_output_bytes: u64,
    pub max_egress_bytes: u64,
    pub max_egress_requests: u64,
    /// Hosts the tool may reach; empty means no network.
    pub network_allowlist: Vec<HostRule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateCard {
    pub tier: String,
    pub version: String,
    pub currency: String,
    pub price_per_fuel_unit: Decimal,
    pub price_per_gib_second: Decimal,
    pub price_per_egress_gib: Decimal,
    pub price_per_invocation: Decimal,
}

impl Config {
    pub fn tenant(&self, id: &str) -> Option<&Tenant> {
        self.tenants.iter().find(|t| t.id == id)
    }

    pub fn tool(&self, id: &str) -> Option<&Tool> {
        self.tools.iter().find(|t| t.id == id)
    }

    /// The policy that allows `tool_id` for `tier`; `None` means denied.
    pub fn policy_for(&self, tool_id: &str, tier: &str) -> Option<&Policy> {
        self.policies
            .iter()
            .find(|p| p.tool_id == tool_id && p.tenant_tier == tier)
    }

    pub fn rate_card(&self, tier: &str) -> Option<&RateCard> {
        self.rate_cards.iter().find(|r| r.tier == tier)
    }
}
