//! Money: rating an attempt from its usage and the rate card, the FinOps KPIs, tenant
//! statements and the FOCUS export.
//!
//! **Architecture Invariant:** money is `Decimal`, never `f64`.
//!
//! Rounding:
//! - every intermediate product is exact in `Decimal` (28 significant digits);
//! - the cost of an attempt is rounded once, half away from zero, to [`COST_SCALE`]
//!   decimal places, the precision of the `Decimal128(12)` columns that store it; sums of
//!   costs are exact;
//! - a KPI that divides (cost per task) is rounded the same way; ratios to
//!   [`kpi::RATIO_SCALE`] places;
//! - each statement line is rounded half up (away from zero) to the currency's minor unit,
//!   and the statement's totals add the rounded lines.

pub mod focus;
pub mod kpi;
pub mod statement;

pub use kpi::{BillingError, Day, Kpis, kpis};
pub use statement::{IssueOutcome, Statement, issue_statement};

use isometer_core::{Money, Usage};
use isometer_policy::RateCard;
use rust_decimal::RoundingStrategy;

/// Decimal places kept for the cost of an attempt.
pub const COST_SCALE: u32 = 12;

const BYTES_PER_GIB: u64 = 1 << 30;
const MICROS_PER_SECOND: u64 = 1_000_000;

/// `m` rounded half away from zero to [`COST_SCALE`] places.
pub fn round_money(m: Money) -> Money {
    m.round_dp_with_strategy(COST_SCALE, RoundingStrategy::MidpointAwayFromZero)
}

/// The itemised cost of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rated {
    pub fuel: Money,
    pub memory: Money,
    pub egress: Money,
    pub invocation: Money,
    /// The sum, rounded to [`COST_SCALE`] places.
    pub total: Money,
}

/// Rates an attempt. An attempt that never ran (denied by policy, invalid artifact) costs
/// nothing: no invocation fee, no usage.
pub fn rate(usage: &Usage, ran: bool, card: &RateCard) -> Rated {
    if !ran {
        return Rated::default();
    }
    let fuel = Money::from(usage.fuel) * card.price_per_fuel_unit;
    let gib_seconds = Money::from(usage.peak_memory_bytes) * Money::from(usage.wall_time_us)
        / (Money::from(BYTES_PER_GIB) * Money::from(MICROS_PER_SECOND));
    let memory = gib_seconds * card.price_per_gib_second;
    let egress =
        Money::from(usage.egress_bytes) / Money::from(BYTES_PER_GIB) * card.price_per_egress_gib;
    let invocation = card.price_per_invocation;
    let total = round_money(fuel + memory + egress + invocation);
    Rated {
        fuel,
        memory,
        egress,
        invocation,
        total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Money {
        Money::from_str(s).expect("decimal")
    }

    fn card() -> RateCard {
        RateCard {
            tier: "standard".into(),
            version: "standard-test".into(),
            effective_from: chrono::NaiveDate::default(),
            currency: "USD".into(),
            price_per_fuel_unit: d("0.000000000005"),
            price_per_gib_second: d("0.0000166667"),
            price_per_egress_gib: d("0.09"),
            price_per_invocation: d("0.0000002"),
        }
    }

    #[test]
    fn golden_costs() {
        // (fuel, peak bytes, wall us, egress bytes) -> total, worked out by hand.
        let cases = [
            // invocation only
            ((0, 0, 0, 0), "0.0000002"),
            // 1e6 fuel x 5e-12 = 0.000005; + invocation
            ((1_000_000, 0, 0, 0), "0.0000052"),
            // 1 GiB for 1 s = 0.0000166667; + invocation
            ((0, 1 << 30, 1_000_000, 0), "0.0000168667"),
            // 1 GiB egress = 0.09; + invocation
            ((0, 0, 0, 1 << 30), "0.0900002"),
            // 64 MiB for 2 ms: 1/16 GiB x 0.002 s = 0.000125 GiB-s x 0.0000166667
            //   = 0.0000000020833375 -> with fuel 50e6 x 5e-12 = 0.00025, + 2e-7
            //   = 0.0002502020833375 -> rounded to 12 places
            ((50_000_000, 64 << 20, 2_000, 0), "0.000250202083"),
        ];
        for ((fuel, peak, wall, egress), want) in cases {
            let usage = Usage {
                fuel,
                peak_memory_bytes: peak,
                wall_time_us: wall,
                egress_bytes: egress,
                output_bytes: 0,
                ..Usage::default()
            };
            assert_eq!(rate(&usage, true, &card()).total, d(want), "{usage:?}");
        }
    }

    #[test]
    fn rounding_is_half_away_from_zero_at_twelve_places() {
        let mut c = card();
        c.price_per_invocation = Money::ZERO;
        c.price_per_fuel_unit = d("0.0000000000005"); // half of the last kept place
        let usage = Usage {
            fuel: 1,
            ..Usage::default()
        };
        assert_eq!(rate(&usage, true, &c).total, d("0.000000000001"));
    }

    #[test]
    fn an_attempt_that_never_ran_costs_nothing() {
        let usage = Usage {
            fuel: 5,
            ..Usage::default()
        };
        assert_eq!(rate(&usage, false, &card()), Rated::default());
    }
}
