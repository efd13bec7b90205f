//! Module keys (`ModuleKey::parse`): what parses prints back the same; keys
//! of any length and digest parse back.

use super::*;
use sha2::{Digest, Sha256};
use wasmgate::modules::ModuleKey;

/// A string shaped like a module key, each piece right or slightly off.
fn near_key() -> impl Strategy<Value = (String, bool)> {
    let prefix = prop_oneof![
        4 => Just(("application/wasm/", true)),
        1 => Just(("/application/wasm/", false)),
        1 => Just(("application/WASM/", false)),
        1 => Just(("", false)),
    ];
    let len = prop_oneof![
        4 => any::<u64>().prop_map(|n| n.to_string()),
        1 => "[0-9]{0,22}",
        // No `b`: it would make the `{len}b/` boundary ambiguous.
        1 => "[-+ 0-9acdef]{0,4}",
    ];
    let middle = prop_oneof![
        6 => Just(("b/sha256-", true)),
        1 => Just(("/sha256-", false)),
        1 => Just(("b/sha512-", false)),
        1 => Just(("b/b/sha256-", false)),
    ];
    let hex = prop_oneof![
        4 => any::<[u8; 32]>().prop_map(hex::encode),
        1 => "[0-9a-fA-F]{63,65}",
        1 => "[0-9a-g]{64}",
    ];
    let suffix = prop_oneof![
        6 => Just((".wasm", true)),
        1 => Just((".wasm/", false)),
        1 => Just((".WASM", false)),
        1 => Just(("", false)),
    ];
    (prefix, len, middle, hex, suffix).prop_map(
        |((prefix, p_ok), len, (middle, m_ok), hex, (suffix, s_ok))| {
            let len_ok = !len.is_empty()
                && len.bytes().all(|b| b.is_ascii_digit())
                && (len == "0" || !len.starts_with('0'))
                && len.parse::<u64>().is_ok();
            let hex_ok = hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            let valid = p_ok && len_ok && m_ok && hex_ok && s_ok;
            (format!("{prefix}{len}{middle}{hex}{suffix}"), valid)
        },
    )
}

proptest! {
    #![proptest_config(cases(2000))]

    #[test]
    fn any_string_parses_only_to_itself(text in any::<String>()) {
        if let Ok(key) = ModuleKey::parse(&text) {
            prop_assert_eq!(key.to_string(), text);
        }
    }

    #[test]
    fn near_keys_are_accepted_exactly_when_well_formed((text, valid) in near_key()) {
        let parsed = ModuleKey::parse(&text);
        prop_assert_eq!(parsed.is_ok(), valid, "{:?}: {:?}", text, parsed);
        if let Ok(key) = parsed {
            prop_assert_eq!(key.to_string(), text);
        }
    }

    #[test]
    fn keys_built_from_len_and_digest_parse_back(len in any::<u64>(), sha256 in any::<[u8; 32]>()) {
        let text = format!("application/wasm/{len}b/sha256-{}.wasm", hex::encode(sha256));
        let key = ModuleKey::parse(&text).unwrap();
        prop_assert_eq!(key.len(), len);
        prop_assert_eq!(key.digest_hex(), hex::encode(sha256));
        prop_assert_eq!(key.to_string(), text);
    }

    #[test]
    fn the_key_of_bytes_verifies_them_and_nothing_else(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
        flip in any::<Index>(),
        extra in any::<u8>(),
    ) {
        let key = ModuleKey::for_bytes(&bytes);
        prop_assert_eq!(key.len(), bytes.len() as u64);
        prop_assert_eq!(key.digest_hex(), hex::encode(Sha256::digest(&bytes)));
        prop_assert_eq!(ModuleKey::parse(&key.to_string()).unwrap(), key);
        prop_assert!(key.verify(&bytes).is_ok());
        let mut longer = bytes.clone();
        longer.push(extra);
        prop_assert!(key.verify(&longer).is_err());
        if !bytes.is_empty() {
            let mut altered = bytes.clone();
            altered[flip.index(bytes.len())] ^= 1;
            prop_assert!(key.verify(&altered).is_err());
        }
    }
}
