//! Identifiers and generated values shaped like the real API's.
//!
//! - machine ids: 14 lowercase hex characters (`1857156b526dd8`);
//! - instance ids, versions, event ids and request ids: 26-character ULIDs
//!   (48-bit millisecond timestamp + 80 random bits, Crockford base32),
//!   generated monotonically so that later ids always sort after earlier ones;
//! - private addresses in Fly's `fdaa::/16` 6PN range;
//! - two-word-and-a-number names like `aged-thunder-7371`.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use rand::Rng;

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A new machine id: 14 lowercase hex characters.
pub fn machine_id() -> String {
    let value: u64 = rand::rng().random_range(0..1u64 << 56);
    format!("{value:014x}")
}

/// A new ULID. Ids made in the same millisecond are strictly increasing.
pub fn ulid() -> String {
    static LAST: Mutex<u128> = Mutex::new(0);
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
        & ((1 << 48) - 1);
    let random: u128 = rand::rng().random::<u128>() & ((1 << 80) - 1);
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    let mut value = (millis << 80) | random;
    if value <= *last {
        value = *last + 1;
    }
    *last = value;
    encode_crockford(value)
}

fn encode_crockford(value: u128) -> String {
    (0..26)
        .rev()
        .map(|i| CROCKFORD[((value >> (i * 5)) & 0x1f) as usize] as char)
        .collect()
}

/// An address in the app's 6PN network, e.g. `fdaa:0:1:a7b:1c2:3d4e:5f60:2`.
pub fn private_ip() -> String {
    let mut rng = rand::rng();
    format!(
        "fdaa:0:1:a7b:{:x}:{:x}:{:x}:2",
        rng.random_range(1..0xfffu16),
        rng.random::<u16>(),
        rng.random::<u16>()
    )
}

/// A generated machine name, as Fly makes when the create request has none.
pub fn machine_name() -> String {
    const ADJECTIVES: &[&str] = &[
        "aged",
        "billowing",
        "bold",
        "calm",
        "crimson",
        "dawn",
        "empty",
        "falling",
        "holy",
        "late",
        "little",
        "morning",
        "patient",
        "quiet",
        "red",
        "silent",
        "snowy",
        "still",
        "weathered",
        "young",
    ];
    const NOUNS: &[&str] = &[
        "bird", "brook", "cloud", "dew", "dream", "field", "fire", "flower", "forest", "frost",
        "lake", "leaf", "meadow", "moon", "pine", "rain", "river", "sea", "snow", "thunder",
    ];
    let mut rng = rand::rng();
    format!(
        "{}-{}-{}",
        ADJECTIVES[rng.random_range(0..ADJECTIVES.len())],
        NOUNS[rng.random_range(0..NOUNS.len())],
        rng.random_range(1000..10000)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_ids_are_14_hex_chars() {
        let id = machine_id();
        assert_eq!(id.len(), 14);
        assert!(id
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    }

    #[test]
    fn ulids_are_26_chars_and_increasing() {
        let ids: Vec<String> = (0..1000).map(|_| ulid()).collect();
        assert!(ids.iter().all(|id| id.len() == 26));
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        assert!(
            ids[0].starts_with('0'),
            "a 2020s timestamp starts with 0: {}",
            ids[0]
        );
    }
}
