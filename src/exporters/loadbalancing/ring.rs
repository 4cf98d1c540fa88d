//! The consistent hash ring: each backend owns `VNODES` points on a 64-bit circle and a key
//! belongs to the first point at or after its hash. Adding or removing one of N backends
//! moves only the keys of that backend's arcs, about 1/N of them. The collector's ring has
//! the same shape (100 crc32 points per endpoint on 36000 positions); the hash differs.

/// Points per backend: enough that three backends get shares within a few percent.
pub const VNODES: u32 = 256;

/// FNV-1a followed by a 64-bit finalizer (splitmix64), so nearby keys spread.
pub fn hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix(h)
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// An immutable ring over a set of endpoints (sorted, deduplicated).
#[derive(Clone, Debug, Default)]
pub struct Ring {
    members: Vec<String>,
    /// (position, member index), sorted by position.
    points: Vec<(u64, u32)>,
}

impl Ring {
    pub fn new(endpoints: &[String]) -> Ring {
        let mut members = endpoints.to_vec();
        members.sort();
        members.dedup();
        let mut points = Vec::with_capacity(members.len() * VNODES as usize);
        for (i, m) in members.iter().enumerate() {
            let base = hash(m.as_bytes());
            for v in 0..VNODES {
                points.push((mix(base ^ mix(u64::from(v) + 1)), i as u32));
            }
        }
        // Ties (vanishingly rare) are broken by member order so every agent builds the same ring.
        points.sort_unstable();
        points.dedup_by_key(|p| p.0);
        Ring { members, points }
    }

    pub fn members(&self) -> &[String] {
        &self.members
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The member owning `key`, skipping members for which `down(index)` holds (the next
    /// member clockwise takes their keys). If every member is down, the owner ignoring that.
    pub fn owner(&self, key: &[u8], down: impl Fn(usize) -> bool) -> Option<usize> {
        self.owner_of_hash(hash(key), down)
    }

    pub fn owner_of_hash(&self, h: u64, down: impl Fn(usize) -> bool) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        let start = self.points.partition_point(|p| p.0 < h) % self.points.len();
        let first = self.points[start].1 as usize;
        if !down(first) {
            return Some(first);
        }
        for k in 1..self.points.len() {
            let m = self.points[(start + k) % self.points.len()].1 as usize;
            if !down(m) {
                return Some(m);
            }
        }
        Some(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{}:4317", i + 1)).collect()
    }

    fn keys(n: u32) -> Vec<[u8; 16]> {
        (0..n)
            .map(|i| {
                let mut k = [0u8; 16];
                k[..4].copy_from_slice(&i.to_le_bytes());
                k[8..12].copy_from_slice(&i.wrapping_mul(2_654_435_761).to_be_bytes());
                k
            })
            .collect()
    }

    fn owners(ring: &Ring, keys: &[[u8; 16]]) -> Vec<String> {
        keys.iter()
            .map(|k| ring.members()[ring.owner(k, |_| false).unwrap()].clone())
            .collect()
    }

    #[test]
    fn shares_are_balanced() {
        let ring = Ring::new(&names(3));
        let keys = keys(90_000);
        let owned = owners(&ring, &keys);
        for m in ring.members() {
            let share = owned.iter().filter(|o| *o == m).count() as f64 / keys.len() as f64;
            assert!((share - 1.0 / 3.0).abs() < 0.05, "{m}: {share}");
        }
    }

    #[test]
    fn a_leaving_member_moves_only_its_keys() {
        let keys = keys(60_000);
        let before = owners(&Ring::new(&names(3)), &keys);
        let after = owners(&Ring::new(&names(2)), &keys);
        let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        let frac = moved as f64 / keys.len() as f64;
        assert!((frac - 1.0 / 3.0).abs() < 0.05, "{frac}");
        // Every moved key belonged to the member that left.
        for (a, b) in before.iter().zip(&after) {
            if a != b {
                assert_eq!(a, "10.0.0.3:4317");
            }
        }
    }

    #[test]
    fn a_joining_member_takes_about_one_over_n() {
        let keys = keys(60_000);
        let before = owners(&Ring::new(&names(3)), &keys);
        let after = owners(&Ring::new(&names(4)), &keys);
        let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        let frac = moved as f64 / keys.len() as f64;
        assert!((frac - 0.25).abs() < 0.05, "{frac}");
        for (a, b) in before.iter().zip(&after) {
            if a != b {
                assert_eq!(b, "10.0.0.4:4317");
            }
        }
    }

    #[test]
    fn order_of_endpoints_does_not_matter() {
        let mut reversed = names(5);
        reversed.reverse();
        let keys = keys(1000);
        assert_eq!(
            owners(&Ring::new(&names(5)), &keys),
            owners(&Ring::new(&reversed), &keys)
        );
    }

    #[test]
    fn down_members_are_skipped_and_only_their_keys_move() {
        let ring = Ring::new(&names(3));
        let keys = keys(30_000);
        for k in &keys {
            let normal = ring.owner(k, |_| false).unwrap();
            let skipping = ring.owner(k, |m| m == 1).unwrap();
            assert_ne!(skipping, 1);
            if normal != 1 {
                assert_eq!(normal, skipping);
            }
        }
        // All down: fall back to the owner.
        assert_eq!(
            ring.owner(&keys[0], |_| true),
            ring.owner(&keys[0], |_| false)
        );
        assert_eq!(Ring::new(&[]).owner(b"x", |_| false), None);
    }
}
