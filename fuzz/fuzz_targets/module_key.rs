//! Module key parsing: whatever parses formats back to the same text, and
//! the key of any bytes parses back to itself and verifies them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmgate::modules::ModuleKey;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(key) = ModuleKey::parse(text)
    {
        assert_eq!(key.to_string(), text);
    }
    let key = ModuleKey::for_bytes(data);
    assert_eq!(ModuleKey::parse(&key.to_string()), Ok(key));
    assert!(key.verify(data).is_ok());
});
