//! The consistent hash ring: each backend owns `VNODES` points on a 64-bit circle and a key
//! belongs to the first point at or after its hash. Adding or removing one of N backends
//! moves only the keys of that backend's arcs, about 1/N of them. The collector's ring has
//! the same shape (100 crc32 points per endpoint on 36000 positions); the hash differs.

/// Points per backend: enough that three backends get shares within a few percent.
pub const VNODES: u32 = 256;

/// A key's position on the circle: the key read 8 bytes at a time (little-endian, the last
/// word zero-padded, the length folded in first), each word folded in with a multiply and a
/// rotation, then a 64-bit finalizer (splitmix64) so nearby keys spread. Two multiplies and the
/// finalizer for a trace id, where byte-at-a-time FNV-1a took sixteen dependent multiplies:
/// every trace of every batch is looked up here.
pub fn hash(bytes: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ bytes.len() as u64;
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let w = u64::from_le_bytes(w.try_into().expect("8 bytes"));
        h = (h ^ w).wrapping_mul(K).rotate_left(29);
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut last = [0u8; 8];
        last[..rest.len()].copy_from_slice(rest);
        h = (h ^ u64::from_le_bytes(last))
            .wrapping_mul(K)
            .rotate_left(29);
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
    /// For each of the circle's `1 << index_bits` equal slices, the first point at or after
    /// the slice's start: a lookup scans from there (a fraction of a point on average)
    /// instead of searching all the points.
    index: Vec<u32>,
    index_bits: u32,
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
        // About four slices per point, at most 65,536 (256 KiB).
        let index_bits = (points.len().max(1).next_power_of_two().trailing_zeros() + 2).min(16);
        let index = (0..1u64 << index_bits)
            .map(|slice| {
                let start = slice << (64 - index_bits);
                points.partition_point(|p| p.0 < start) as u32
            })
            .collect();
        Ring {
            members,
            points,
            index,
            index_bits,
        }
    }

    pub fn members(&self) -> &[String] {
        &self.members
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The member owning `key` (the split hashes keys itself and calls `owner_of_hash`).
    #[cfg(test)]
    fn owner(&self, key: &[u8], down: impl Fn(usize) -> bool) -> Option<usize> {
        self.owner_of_hash(hash(key), down)
    }

    /// The member owning a key of hash `h`, skipping members for which `down(index)` holds
    /// (the next member clockwise takes their keys). If every member is down, the owner
    /// ignoring that.
    pub fn owner_of_hash(&self, h: u64, down: impl Fn(usize) -> bool) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        let mut start = self.index[(h >> (64 - self.index_bits)) as usize] as usize;
        while start < self.points.len() && self.points[start].0 < h {
            start += 1;
        }
        let start = start % self.points.len();
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
    fn the_index_finds_the_same_point_as_a_search() {
        for n in [1, 3, 17, 300] {
            let ring = Ring::new(&names(n));
            let searched = |h: u64| {
                let i = ring.points.partition_point(|p| p.0 < h) % ring.points.len();
                ring.points[i].1 as usize
            };
            let mut probes: Vec<u64> = vec![0, 1, u64::MAX, u64::MAX - 1, 1 << 63];
            for p in &ring.points {
                probes.extend([p.0, p.0.wrapping_sub(1), p.0.wrapping_add(1)]);
            }
            probes.extend((0..10_000u64).map(mix));
            for h in probes {
                assert_eq!(
                    ring.owner_of_hash(h, |_| false),
                    Some(searched(h)),
                    "{h:#x}"
                );
            }
        }
    }

    #[test]
    fn keys_of_any_length_hash_apart() {
        let keys: Vec<&[u8]> = vec![b"", b"a", b"a\0", b"checkout", b"checkout\0", b"12345678"];
        let hashes: std::collections::HashSet<u64> = keys.iter().map(|k| hash(k)).collect();
        assert_eq!(hashes.len(), keys.len());
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
