//! Which hosts a run touches and when it gives up: `--shard I/N`,
//! `--limit PATTERN` and `--max-fail N|P%`; and how many agents a rolling
//! upgrade takes out of service at once: `--max-unavailable N|P%`.

use std::fmt;
use std::str::FromStr;

/// The I-th (1-based) of N slices of the sites, chosen by a stable hash of the site name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// 1-based slice number.
    pub index: u32,
    /// Number of slices.
    pub count: u32,
}

impl Shard {
    /// Whether the site named `site` belongs to this slice.
    pub fn contains_site(&self, site: &str) -> bool {
        // FNV-1a: stable across builds and platforms, unlike std's hasher.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in site.as_bytes() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.count > 0 && h % u64::from(self.count) == u64::from(self.index.saturating_sub(1))
    }
}

impl FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Shard, String> {
        let bad = || format!("`{s}` is not a shard; write I/N with 1 <= I <= N, e.g. 2/4");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: u32 = i.trim().parse().map_err(|_| bad())?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if index == 0 || count == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// When to stop starting new hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxFail {
    /// More than this many failed hosts.
    Count(usize),
    /// More than this percentage of all hosts failed.
    Percent(u8),
}

impl MaxFail {
    /// Whether `failed` of `total` hosts is past the limit.
    pub fn exceeded(&self, failed: usize, total: usize) -> bool {
        match *self {
            MaxFail::Count(n) => failed > n,
            MaxFail::Percent(p) => failed * 100 > usize::from(p) * total,
        }
    }
}

impl FromStr for MaxFail {
    type Err = String;
    fn from_str(s: &str) -> Result<MaxFail, String> {
        let bad =
            || format!("`{s}` is not a failure limit; write a count (3) or a percentage (10%)");
        match s.trim().strip_suffix('%') {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= 100)
                .map(MaxFail::Percent)
                .ok_or_else(bad),
            None => s.trim().parse().map(MaxFail::Count).map_err(|_| bad()),
        }
    }
}

/// How many nodes of a rolling group may be out of service at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxUnavailable {
    /// This many.
    Count(usize),
    /// This percentage of the group, rounded down.
    Percent(u8),
}

impl Default for MaxUnavailable {
    fn default() -> MaxUnavailable {
        MaxUnavailable::Count(1)
    }
}

impl MaxUnavailable {
    /// Slots for a group of `members`: at least one, never more than the group.
    pub fn slots(&self, members: usize) -> usize {
        let n = match *self {
            MaxUnavailable::Count(n) => n,
            MaxUnavailable::Percent(p) => members * usize::from(p) / 100,
        };
        n.clamp(1, members.max(1))
    }
}

impl FromStr for MaxUnavailable {
    type Err = String;
    fn from_str(s: &str) -> Result<MaxUnavailable, String> {
        let bad = || {
            format!(
                "`{s}` is not a number of nodes; write a count (2) or a percentage (25%), at least 1 node is always taken"
            )
        };
        match s.trim().strip_suffix('%') {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| (1..=100).contains(p))
                .map(MaxUnavailable::Percent)
                .ok_or_else(bad),
            None => s
                .trim()
                .parse()
                .ok()
                .filter(|n| *n >= 1)
                .map(MaxUnavailable::Count)
                .ok_or_else(bad),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_split_sites_into_disjoint_covering_slices() {
        let sites: Vec<String> = (0..200).map(|i| format!("site-{i}")).collect();
        let n = 4;
        let mut sizes = Vec::new();
        for s in &sites {
            let owners: Vec<u32> = (1..=n)
                .filter(|i| {
                    Shard {
                        index: *i,
                        count: n,
                    }
                    .contains_site(s)
                })
                .collect();
            assert_eq!(owners.len(), 1, "{s} is in {owners:?}");
        }
        for i in 1..=n {
            sizes.push(
                sites
                    .iter()
                    .filter(|s| Shard { index: i, count: n }.contains_site(s))
                    .count(),
            );
        }
        assert!(sizes.iter().all(|c| *c > 25), "unbalanced: {sizes:?}");
        // Stable: the same name always lands in the same slice.
        assert!(Shard { index: 1, count: 1 }.contains_site("anything"));
    }

    #[test]
    fn shard_and_max_fail_parse() {
        assert_eq!("2/4".parse::<Shard>(), Ok(Shard { index: 2, count: 4 }));
        assert!("0/4".parse::<Shard>().is_err());
        assert!("5/4".parse::<Shard>().is_err());
        assert!("x".parse::<Shard>().unwrap_err().contains("write I/N"));
        assert_eq!("3".parse::<MaxFail>(), Ok(MaxFail::Count(3)));
        assert_eq!("10%".parse::<MaxFail>(), Ok(MaxFail::Percent(10)));
        assert!("150%".parse::<MaxFail>().is_err());
    }

    #[test]
    fn max_fail_thresholds() {
        assert!(!MaxFail::Count(0).exceeded(0, 10));
        assert!(MaxFail::Count(0).exceeded(1, 10));
        assert!(!MaxFail::Percent(10).exceeded(1, 10));
        assert!(MaxFail::Percent(10).exceeded(2, 10));
    }

    #[test]
    fn batches_are_at_least_one_node_and_round_down() {
        let p = |s: &str| s.parse::<MaxUnavailable>().unwrap();
        assert_eq!(p("1").slots(10), 1);
        assert_eq!(p("3").slots(10), 3);
        assert_eq!(p("30").slots(10), 10, "never more than the group");
        assert_eq!(p("25%").slots(10), 2, "2.5 rounds down");
        assert_eq!(p("10%").slots(5), 1, "at least one");
        assert_eq!(p("100%").slots(7), 7);
        assert_eq!(p("50%").slots(0), 1);
        assert_eq!(MaxUnavailable::default().slots(4), 1);
        for bad in ["0", "0%", "101%", "-1", "x", "1.5"] {
            assert!(bad.parse::<MaxUnavailable>().is_err(), "{bad}");
        }
    }
}
