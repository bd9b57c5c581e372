//! Fault injection: which faults are on, and a seeded RNG so a run repeats.

use std::collections::BTreeSet;

use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// Faults to inject. Rates are probabilities per event (0.0..=1.0); the default injects nothing.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FaultConfig {
    /// Probability that a storage-lock acquisition times out (with the real error text).
    pub lock_timeout: f64,
    /// Probability that an API request fails with HTTP 500 before reaching its handler.
    pub http_500: f64,
    /// Probability that an API request fails with HTTP 503.
    pub http_503: f64,
    /// Probability that the connection is closed without a response.
    pub drop_connection: f64,
    /// Probability that a response is delayed by `slow_response_ms`.
    pub slow_response: f64,
    /// Delay of a slow response in milliseconds (not scaled by the time scale; 0 = 1000 ms).
    pub slow_response_ms: u64,
    /// Nodes that are offline: calls to them get HTTP 595.
    pub node_offline: BTreeSet<String>,
    /// Storages (ids) that are full: allocations on them fail.
    pub storage_full: BTreeSet<String>,
    /// Guests that ignore ACPI shutdown requests.
    pub ignore_acpi: BTreeSet<u32>,
}

impl FaultConfig {
    /// Applies one `key=value` setting, as given to `--fault`.
    pub fn apply_kv(&mut self, kv: &str) -> Result<(), String> {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("fault '{kv}' is not key=value"))?;
        let rate = || -> Result<f64, String> {
            let r: f64 = v
                .parse()
                .map_err(|_| format!("fault {k}: '{v}' is not a number"))?;
            if (0.0..=1.0).contains(&r) {
                Ok(r)
            } else {
                Err(format!("fault {k}: rate must be within 0..1"))
            }
        };
        match k {
            "lock_timeout" => self.lock_timeout = rate()?,
            "http_500" => self.http_500 = rate()?,
            "http_503" => self.http_503 = rate()?,
            "drop_connection" => self.drop_connection = rate()?,
            "slow_response" => self.slow_response = rate()?,
            "slow_response_ms" => {
                self.slow_response_ms = v.parse().map_err(|_| format!("fault {k}: bad number"))?
            }
            "node_offline" => {
                self.node_offline.insert(v.to_string());
            }
            "storage_full" => {
                self.storage_full.insert(v.to_string());
            }
            "ignore_acpi" => {
                self.ignore_acpi
                    .insert(v.parse().map_err(|_| format!("fault {k}: bad vmid"))?);
            }
            _ => return Err(format!("unknown fault '{k}'")),
        }
        Ok(())
    }
}

/// What to do with one API request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFault {
    None,
    Http500,
    Http503,
    Drop,
}

/// The fault config plus its RNG.
pub struct Faults {
    pub config: FaultConfig,
    rng: rand::rngs::StdRng,
}

impl Faults {
    pub fn new(config: FaultConfig, seed: u64) -> Self {
        Self {
            config,
            rng: rand::rngs::StdRng::seed_from_u64(seed),
        }
    }

    fn roll(&mut self, rate: f64) -> bool {
        rate > 0.0 && self.rng.gen::<f64>() < rate
    }

    /// Decides the fault of one request and whether it is slowed down (delay in ms).
    pub fn for_request(&mut self) -> (RequestFault, Option<u64>) {
        let c = self.config.clone();
        let slow = self
            .roll(c.slow_response)
            .then_some(c.slow_response_ms.max(1));
        let f = if self.roll(c.drop_connection) {
            RequestFault::Drop
        } else if self.roll(c.http_500) {
            RequestFault::Http500
        } else if self.roll(c.http_503) {
            RequestFault::Http503
        } else {
            RequestFault::None
        };
        (f, slow)
    }

    /// Whether this storage-lock acquisition times out.
    pub fn lock_timeout(&mut self) -> bool {
        let r = self.config.lock_timeout;
        self.roll(r)
    }

    /// A fresh random value for MAC addresses and UUIDs (from the seeded RNG).
    pub fn random_bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut b = [0u8; N];
        self.rng.fill(&mut b[..]);
        b
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn fault_flags_parse_and_reject_nonsense() {
        let mut f = FaultConfig::default();
        f.apply_kv("lock_timeout=0.2").unwrap();
        f.apply_kv("node_offline=pve2").unwrap();
        f.apply_kv("ignore_acpi=120").unwrap();
        assert_eq!(f.lock_timeout, 0.2);
        assert!(f.node_offline.contains("pve2"));
        assert!(f.ignore_acpi.contains(&120));
        assert!(f.apply_kv("lock_timeout=2").is_err());
        assert!(f.apply_kv("bogus=1").is_err());
        assert!(f.apply_kv("http_500").is_err());
    }

    #[test]
    fn same_seed_gives_same_fault_sequence() {
        let cfg = FaultConfig {
            http_500: 0.3,
            ..Default::default()
        };
        let mut a = Faults::new(cfg.clone(), 7);
        let mut b = Faults::new(cfg, 7);
        let sa: Vec<_> = (0..50).map(|_| a.for_request().0).collect();
        let sb: Vec<_> = (0..50).map(|_| b.for_request().0).collect();
        assert_eq!(sa, sb);
        assert!(sa.contains(&RequestFault::Http500));
        assert!(sa.contains(&RequestFault::None));
    }
}
